"""`bundler bench convert` beside llama.cpp's `llama-quantize`: float32 GGUF models to the
file types users pick most, both tools as child processes measured the same way
(`bundler.bench.child`), the same thread count, warm.

The llama-quantize measured is the speed build of the repository's reference tooling
(`tools.reference.llama_quantize_o3`: the same source distribution as the byte-exactness
oracle, every file at -O3), or any executable given by path. Warm means: the kernels bundler
compiles are compiled (and cached) by `bundler warmup` before the first timed run, and each
input file has been read once, so both tools start with it in the page cache.
"""

from __future__ import annotations

import importlib
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

from bundler.bench.child import measure
from bundler.errors import BundlerError, FileNotFound

#: The file types measured by default, in llama-quantize's spelling (bundler takes the same).
TYPES = ("Q8_0", "Q4_0", "Q4_K_M")
#: The models measured by default (see `bundler.bench.models`).
MODELS = ("smollm2", "llama")
MIB = float(1 << 20)


def find_binary(path: str | os.PathLike[str] | None = None) -> Path:
    """The llama-quantize executable: `path`, or the cached -O3 reference build.

    Raises `FileNotFound` for a missing `path`, `BundlerError` saying how to build the
    reference when it is not built (it is not built here: several minutes on two cores).
    """
    if path is not None:
        if not Path(path).is_file():
            raise FileNotFound(path)
        return Path(path)
    try:
        return _reference_build().binary(build=False)
    except Exception as exc:
        raise BundlerError(
            "the -O3 llama-quantize is not available "
            f"({type(exc).__name__}: {exc}); build it from the repository root with "
            "`python -m tools.reference.llama_quantize_o3`, pass --llama-quantize PATH, or "
            "leave it out with --against gguf"
        ) from None


def _reference_build() -> Any:
    """`tools.reference.llama_quantize_o3`, from the checkout this bundler runs from when it
    is not importable as it is (the `bundler` command of an editable install)."""
    name = "tools.reference.llama_quantize_o3"
    try:
        return importlib.import_module(name)
    except ModuleNotFoundError:
        root = Path(__file__).resolve().parents[2]
        if not (root / "tools" / "reference" / "llama_quantize_o3.py").is_file():
            raise
        sys.path.append(str(root))
        return importlib.import_module(name)


def bundler_command() -> list[str]:
    """The `bundler` console script beside this interpreter, or `python -m bundler`."""
    exe = Path(sys.executable).with_name("bundler")
    return [str(exe)] if exe.exists() else [sys.executable, "-m", "bundler"]


def warm_up(inputs: list[Path]) -> None:
    """Compile bundler's kernels (cached for the runs) and read every input once."""
    done = subprocess.run([*bundler_command(), "warmup"], capture_output=True, text=True)
    if done.returncode:
        raise BundlerError(f"bundler warmup exited {done.returncode}: {done.stderr[-2000:]}")
    for path in inputs:
        with open(path, "rb", buffering=0) as f:
            while f.read(16 << 20):
                pass


def _bundler_run(src: Path, dst: Path, file_type: str, threads: int) -> dict[str, Any]:
    cmd = [*bundler_command(), "quantize", str(src), "-o", str(dst), "--type", file_type]
    m = measure([*cmd, "--threads", str(threads), "-q"])
    del m["stdout"]
    return m


def _llama_quantize_run(
    binary: Path, src: Path, dst: Path, file_type: str, threads: int
) -> dict[str, Any]:
    m = measure([str(binary), str(src), str(dst), file_type, str(threads)])
    del m["stdout"]
    return m


def row(
    model: str,
    src: Path,
    file_type: str,
    binary: Path,
    directory: Path,
    threads: int,
    repeat: int,
) -> dict[str, Any]:
    """One model to one file type with both tools, `repeat` runs each (alternating; the
    fastest kept, peak memory the highest seen), and whether their tensors are identical."""
    from bundler.bench.outputs import compare_outputs

    outputs = {w: directory / f"{model}-{file_type}-{w}.gguf" for w in ("bundler", "llama")}
    runs: dict[str, list[dict[str, Any]]] = {"bundler": [], "llama_quantize": []}
    for _ in range(repeat):
        for path in outputs.values():  # each run writes a new file, as the first did
            path.unlink(missing_ok=True)
        runs["bundler"].append(_bundler_run(src, outputs["bundler"], file_type, threads))
        runs["llama_quantize"].append(
            _llama_quantize_run(binary, src, outputs["llama"], file_type, threads)
        )
    size = src.stat().st_size
    result: dict[str, Any] = {"model": model, "type": file_type, "source_bytes": size}
    for which, ms in runs.items():
        best = min(ms, key=lambda m: m["seconds"])
        result[which] = {
            **best,
            "runs_seconds": [m["seconds"] for m in ms],
            "runs_cpu_seconds": [m["cpu_seconds"] for m in ms],
            "runs_peak_rss": [m["peak_rss"] for m in ms],
            "peak_rss": max(m["peak_rss"] for m in ms),
            "mib_per_s": size / MIB / best["seconds"],
            "output_bytes": (outputs["bundler" if which == "bundler" else "llama"]).stat().st_size,
        }
    ours, theirs = result["bundler"], result["llama_quantize"]
    result["speedup"] = theirs["seconds"] / ours["seconds"]
    result["memory_ratio"] = theirs["peak_rss"] / ours["peak_rss"]
    result["goals"] = {
        "seconds_met": ours["seconds"] <= theirs["seconds"],
        "peak_rss_met": ours["peak_rss"] <= theirs["peak_rss"],
    }
    result["outputs"] = compare_outputs(str(outputs["bundler"]), str(outputs["llama"]))
    return result
