"""`bundler bench convert`: float32 SafeTensors -> Q4_0 GGUF, end to end, beside the `gguf`
package's own path.

One run generates a float32 SafeTensors model of `--size-gib` GiB (64 MiB weight matrices
of 4096 x 4096 plus 1-D norms, with llama-like names) in a temporary directory, then
converts it to Q4_0 GGUF twice, each in a fresh subprocess:

- bundler: `bundler quantize MODEL -o OUT --type Q4_0`;
- reference: safetensors' `safe_open` reads each tensor, `gguf.quants.quantize` encodes
  each 2-D weight to Q4_0, `gguf.GGUFWriter` writes the file (it holds every tensor until
  it writes).

Each subprocess is timed from start to exit (imports included) and reports its own peak
resident set (VmHWM). The two outputs must hold byte-identical tensors.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from bundler.errors import UsageError

GIB = 1 << 30
MIB = float(1 << 20)
SIDE = 4096
#: What the issue asks of bundler: this many times faster, and at most this peak memory.
TARGET_SPEEDUP = 3.0
TARGET_PEAK_RSS = 256 << 20

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


# ------------------------------------------------------------------------------ the input


def _values_source_class():
    from bundler.bundle import Source

    class ValuesSource(Source):
        """Weight-like float32 values, made a chunk at a time from one random block."""

        def __init__(self, nbytes: int, seed: int, base: np.ndarray):
            self.nbytes, self.seed, self.base = nbytes, seed, base

        def raw(self) -> np.ndarray:
            return np.concatenate(list(self.iter_raw(8 << 20)))

        def iter_raw(self, chunk_bytes: int) -> Iterator[np.ndarray]:
            rng = np.random.default_rng(self.seed)
            out = np.empty_like(self.base)
            left = self.nbytes
            while left:
                scale, shift = rng.uniform(0.01, 0.1), rng.uniform(-0.01, 0.01)
                np.multiply(self.base, np.float32(scale), out=out)
                out += np.float32(shift)
                n = min(left, out.nbytes, chunk_bytes - chunk_bytes % 4 or 4)
                yield out.view(np.uint8)[:n]
                left -= n

    return ValuesSource


def generate(path: str | os.PathLike[str], size_gib: float) -> int:
    """Write the float32 SafeTensors model (streamed, never held whole); returns its size."""
    from bundler.bundle import Bundle, Tensor

    source = _values_source_class()
    base = np.random.default_rng(0).standard_normal(2 << 20, dtype=np.float32)
    bundle = Bundle({"general.architecture": "llama"})
    matrices = max(1, round(size_gib * GIB / (SIDE * SIDE * 4)))
    for i in range(matrices):
        bundle.add(
            Tensor(f"blk.{i}.attn_norm.weight", (SIDE,), "f32", source(SIDE * 4, 2**20 + i, base))
        )
        nbytes = SIDE * SIDE * 4
        bundle.add(Tensor(f"blk.{i}.ffn_up.weight", (SIDE, SIDE), "f32", source(nbytes, i, base)))
    bundle.add(Tensor("output_norm.weight", (SIDE,), "f32", source(SIDE * 4, 10**6, base)))
    bundle.save(path, format="safetensors")
    return os.path.getsize(path)


# ------------------------------------------------------------------------------ the runs


#: Prepended to each measured script: at exit it writes the process's resident high-water
#: mark (VmHWM, which counts only this program: the fork's copy of the parent is not in
#: it, unlike ru_maxrss) to the path given as its first argument.
_REPORT_PEAK = """
import atexit, sys
_peak_path = sys.argv.pop(1)
def _report_peak():
    try:
        with open("/proc/self/status") as f:
            hwm = [int(line.split()[1]) * 1024 for line in f if line.startswith("VmHWM:")]
    except OSError:
        return
    with open(_peak_path, "w") as f:
        f.write(str(hwm[0]))
atexit.register(_report_peak)
"""
#: The `bundler` command itself (its console script runs exactly this).
_BUNDLER = """
from bundler.cli import run
sys.exit(run())
"""


def run_measured(code: str, args: list[str]) -> dict[str, Any]:
    """Run Python `code` with `args` in a fresh process: wall seconds (start-up included),
    CPU seconds (user + system, all threads: what other load on the machine cannot
    inflate), peak resident set in bytes, and stdout."""
    os.sync()  # no writeback of an earlier run's pages during this one
    with tempfile.TemporaryDirectory() as tmp:
        peak_path = os.path.join(tmp, "peak")
        out_path, err_path = os.path.join(tmp, "out"), os.path.join(tmp, "err")
        cmd = [sys.executable, "-c", _REPORT_PEAK + code, peak_path, *args]
        with open(out_path, "wb") as out, open(err_path, "wb") as err:
            start = time.perf_counter()
            proc = subprocess.Popen(cmd, stdout=out, stderr=err)
            _, status, usage = os.wait4(proc.pid, 0)
            seconds = time.perf_counter() - start
        exit_code = os.waitstatus_to_exitcode(status)
        proc.returncode = exit_code
        stdout = Path(out_path).read_text()
        if exit_code:
            from bundler.errors import BundlerError

            stderr = Path(err_path).read_text()
            raise BundlerError(f"{' '.join(args[:2])} ... exited {exit_code}: {stderr[-2000:]}")
        try:
            peak = int(Path(peak_path).read_text())
        except (OSError, ValueError):  # no /proc: the kernel's figure (KiB on Linux)
            peak = usage.ru_maxrss * 1024
    cpu = usage.ru_utime + usage.ru_stime
    return {"seconds": seconds, "cpu_seconds": cpu, "peak_rss": peak, "stdout": stdout}


def convert_with_bundler(src: str, dst: str) -> dict[str, Any]:
    m = run_measured(_BUNDLER, ["quantize", src, "-o", dst, "--type", "Q4_0", "--json"])
    m["pipeline_seconds"] = json.loads(m.pop("stdout"))["seconds"]
    return m


def convert_with_gguf(src: str, dst: str) -> dict[str, Any]:
    m = run_measured(_REFERENCE, [src, dst])
    del m["stdout"]
    return m


def compare_outputs(ours: str, theirs: str) -> dict[str, Any]:
    """Tensor by tensor (names, types, shapes, bytes), read with gguf.GGUFReader."""
    import gguf

    a = {t.name: t for t in gguf.GGUFReader(ours).tensors}
    b = {t.name: t for t in gguf.GGUFReader(theirs).tensors}
    differ = sorted(set(a) ^ set(b))
    for name in sorted(set(a) & set(b)):
        x, y = a[name], b[name]
        same = (
            x.tensor_type == y.tensor_type
            and list(x.shape) == list(y.shape)
            and np.array_equal(np.asarray(x.data).view(np.uint8), np.asarray(y.data).view(np.uint8))
        )
        if not same:
            differ.append(name)
    return {"tensors": len(a), "equal": not differ, "differ": differ[:10]}


def run(size_gib: float = 1.0, keep: bool = False, repeat: int = 3) -> dict[str, Any]:
    """Generate, convert both ways (`repeat` runs each, alternating, best kept), compare;
    with `keep` the files stay in `directory`."""
    if not 0 < size_gib <= 64:
        raise UsageError(f"--size-gib must be in (0, 64], got {size_gib}")
    if repeat < 1:
        raise UsageError(f"--repeat must be at least 1, got {repeat}")
    directory = tempfile.mkdtemp(prefix="bundler-bench-convert-")
    try:
        src = os.path.join(directory, "model-f32.safetensors")
        ours, theirs = (
            os.path.join(directory, f"model-q4_0-{w}.gguf") for w in ("bundler", "gguf")
        )
        _say(f"generating {size_gib:g} GiB float32 SafeTensors in {directory}")
        size = generate(src, size_gib)
        runs: dict[str, list[dict[str, Any]]] = {"bundler": [], "gguf": []}
        for i in range(max(1, repeat)):
            for path in (ours, theirs):  # each run writes a new file, as the first did
                if os.path.exists(path):
                    os.unlink(path)
            _say(f"run {i + 1}/{repeat}: bundler quantize")
            runs["bundler"].append(convert_with_bundler(src, ours))
            _say(f"run {i + 1}/{repeat}: safetensors + gguf.quants + GGUFWriter")
            runs["gguf"].append(convert_with_gguf(src, theirs))
        result: dict[str, Any] = {
            "source_bytes": size, "size_gib": size_gib, "directory": directory, "kept": keep,
        }  # fmt: skip
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
    finally:
        if not keep:
            shutil.rmtree(directory, ignore_errors=True)


def _say(text: str) -> None:
    if sys.stderr.isatty():
        print(f"bench convert: {text}", file=sys.stderr, flush=True)
