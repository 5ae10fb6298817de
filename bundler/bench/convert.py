"""`bundler bench convert`: whole conversions, bundler beside llama.cpp's `llama-quantize`
and beside the `gguf` package's own path, in one run.

- Against llama-quantize (`bundler.bench.against_llama_quantize`): float32 GGUF models
  (SmolLM2-135M decoded from the package index's file, and a generated llama-shaped model
  of `--size-gib`) to Q8_0, Q4_0 and Q4_K_M, both tools with the same thread count, warm.
- Against the `gguf` package: a generated float32 SafeTensors model of `--size-gib` to Q4_0;
  bundler runs `bundler quantize MODEL -o OUT --type Q4_0`, the reference reads each tensor
  with safetensors' `safe_open`, encodes each 2-D weight with `gguf.quants.quantize` and
  writes with `gguf.GGUFWriter` (which holds every tensor until it writes).

Every converter runs in a fresh child process measured the same way (`bundler.bench.child`:
wall time, CPU time of the child, its peak resident set); each pair of outputs must hold
byte-identical tensors.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
import tempfile
from pathlib import Path
from typing import Any

from bundler.bench import against_llama_quantize as peers
from bundler.bench.child import measure
from bundler.bench.models import GIB, SIDE, generate, llama_shaped, smollm2_f32
from bundler.bench.outputs import compare_outputs
from bundler.errors import UsageError

__all__ = ["GIB", "SIDE", "compare_outputs", "generate", "run", "run_measured"]

MIB = float(1 << 20)
#: What the issue asks of bundler: this many times faster, and at most this peak memory.
TARGET_SPEEDUP = 3.0
TARGET_PEAK_RSS = 256 << 20
#: The comparisons one run makes by default.
AGAINST = ("llama-quantize", "gguf")

_REFERENCE = """
import sys
import gguf
from safetensors import safe_open

src, dst = sys.argv[1], sys.argv[2]
writer = gguf.GGUFWriter(dst, arch="llama")
with safe_open(src, "np") as f:
    for name in f.keys():
        a = f.get_tensor(name)
        if a.ndim == 2 and name.endswith(".weight"):
            q = gguf.quants.quantize(a, gguf.GGMLQuantizationType.Q4_0)
            writer.add_tensor(name, q, raw_shape=q.shape, raw_dtype=gguf.GGMLQuantizationType.Q4_0)
        else:
            writer.add_tensor(name, a)
writer.write_header_to_file()
writer.write_kv_data_to_file()
writer.write_tensors_to_file()
writer.close()
"""


# ------------------------------------------------------------------------------ the runs


#: The `bundler` command itself (its console script runs exactly this).
_BUNDLER = """
from bundler.cli import run
sys.exit(run())
"""


def run_measured(code: str, args: list[str]) -> dict[str, Any]:
    """Run Python `code` with `args` in a fresh interpreter (`sys` imported), measured as
    `bundler.bench.child.measure` measures any command: wall seconds (start-up included),
    CPU seconds, peak resident set in bytes, and stdout."""
    return measure([sys.executable, "-c", "import sys\n" + code, *args])


def convert_with_bundler(src: str, dst: str) -> dict[str, Any]:
    m = run_measured(_BUNDLER, ["quantize", src, "-o", dst, "--type", "Q4_0", "--json"])
    m["pipeline_seconds"] = json.loads(m.pop("stdout"))["seconds"]
    return m


def convert_with_gguf(src: str, dst: str) -> dict[str, Any]:
    m = run_measured(_REFERENCE, [src, dst])
    del m["stdout"]
    return m


def run(
    size_gib: float = 1.0,
    keep: bool = False,
    repeat: int = 3,
    against: tuple[str, ...] = AGAINST,
    models: tuple[str, ...] = peers.MODELS,
    types: tuple[str, ...] = peers.TYPES,
    threads: int | None = None,
    llama_quantize: str | None = None,
) -> dict[str, Any]:
    """Every comparison of `against` ("llama-quantize", "gguf"), `repeat` runs of each
    converter (alternating; best kept); with `keep` the files stay in `directory`."""
    if not 0 < size_gib <= 64:
        raise UsageError(f"--size-gib must be in (0, 64], got {size_gib}")
    if repeat < 1:
        raise UsageError(f"--repeat must be at least 1, got {repeat}")
    unknown = sorted(set(against) - set(AGAINST)) + sorted(set(models) - set(peers.MODELS))
    if unknown:
        raise UsageError(f"unknown comparison or model {unknown}: known {AGAINST + peers.MODELS}")
    if not (against and models and types):
        raise UsageError("--against, --models and --types each need at least one name")
    from bundler.plan.filetypes import file_type

    types = tuple(file_type(t).name for t in types)  # llama-quantize's spelling
    threads = threads or _cpus()
    binary = peers.find_binary(llama_quantize) if "llama-quantize" in against else None
    directory = tempfile.mkdtemp(prefix="bundler-bench-convert-")
    result: dict[str, Any] = {
        "size_gib": size_gib, "directory": directory, "kept": keep, "threads": threads,
        "repeat": repeat, "cpus": _cpus(), "load_average": {"start": list(os.getloadavg())},
    }  # fmt: skip
    try:
        if binary is not None:
            result["llama_quantize"] = _against_llama_quantize(
                Path(directory), binary, size_gib, models, types, threads, repeat
            )
        if "gguf" in against:
            result["gguf_package"] = _against_gguf(directory, size_gib, repeat)
        result["load_average"]["end"] = list(os.getloadavg())
        return result
    finally:
        if not keep:
            shutil.rmtree(directory, ignore_errors=True)


def _against_llama_quantize(
    directory: Path,
    binary: Path,
    size_gib: float,
    models: tuple[str, ...],
    types: tuple[str, ...],
    threads: int,
    repeat: int,
) -> dict[str, Any]:
    inputs = {}
    for model in models:
        if model == "smollm2":
            _say("SmolLM2-135M as float32 GGUF (decoded once, cached)")
            inputs[model] = smollm2_f32()
        else:
            _say(f"generating a {size_gib:g} GiB float32 llama-shaped GGUF in {directory}")
            inputs[model] = directory / "llama-f32.gguf"
            llama_shaped(inputs[model], size_gib)
    _say("bundler warmup (compiling kernels once) and reading the inputs once")
    peers.warm_up(list(inputs.values()))
    rows = []
    for model, src in inputs.items():
        for file_type in types:
            _say(f"{model} -> {file_type}: {repeat} run(s) of each tool, {threads} thread(s)")
            rows.append(peers.row(model, src, file_type, binary, directory, threads, repeat))
    return {
        "binary": str(binary),
        "warm": "kernels compiled by `bundler warmup` and inputs read once before timing",
        "rows": rows,
    }


def _against_gguf(directory: str, size_gib: float, repeat: int) -> dict[str, Any]:
    src = os.path.join(directory, "model-f32.safetensors")
    ours, theirs = (os.path.join(directory, f"model-q4_0-{w}.gguf") for w in ("bundler", "gguf"))
    _say(f"generating {size_gib:g} GiB float32 SafeTensors in {directory}")
    size = generate(src, size_gib)
    runs: dict[str, list[dict[str, Any]]] = {"bundler": [], "gguf": []}
    for i in range(repeat):
        for path in (ours, theirs):  # each run writes a new file, as the first did
            if os.path.exists(path):
                os.unlink(path)
        _say(f"run {i + 1}/{repeat}: bundler quantize")
        runs["bundler"].append(convert_with_bundler(src, ours))
        _say(f"run {i + 1}/{repeat}: safetensors + gguf.quants + GGUFWriter")
        runs["gguf"].append(convert_with_gguf(src, theirs))
    result: dict[str, Any] = {"source_bytes": size}
    for which, ms in runs.items():
        best = min(ms, key=lambda m: m["seconds"])
        result[which] = {
            **best,
            "runs_seconds": [m["seconds"] for m in ms],
            "mib_per_s": size / MIB / best["seconds"],
            "peak_rss": max(m["peak_rss"] for m in ms),
            "output_bytes": os.path.getsize(ours if which == "bundler" else theirs),
        }
    result["speedup"] = result["gguf"]["seconds"] / result["bundler"]["seconds"]
    result["memory_ratio"] = result["gguf"]["peak_rss"] / result["bundler"]["peak_rss"]
    result["outputs"] = compare_outputs(ours, theirs)
    result["targets"] = {
        "speedup": TARGET_SPEEDUP,
        "speedup_met": result["speedup"] >= TARGET_SPEEDUP,
        "peak_rss": TARGET_PEAK_RSS,
        "peak_rss_met": result["bundler"]["peak_rss"] < TARGET_PEAK_RSS,
    }
    return result


def all_outputs_equal(result: dict[str, Any]) -> bool:
    """Whether every pair of outputs in a `run` result held identical tensors."""
    pairs = [r["outputs"] for r in result.get("llama_quantize", {}).get("rows", [])]
    if "gguf_package" in result:
        pairs.append(result["gguf_package"]["outputs"])
    return all(p["equal"] for p in pairs)


def _cpus() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def _say(text: str) -> None:
    if sys.stderr.isatty():
        print(f"bench convert: {text}", file=sys.stderr, flush=True)
