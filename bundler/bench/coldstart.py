"""`bundler bench coldstart`: how long a new user waits the first time, and every time after.

Each measurement is a fresh `bundler` process: `quantize` of the MiniLM SafeTensors to
Q4_K_M and to Q4_0 with an empty kernel cache (NUMBA_CACHE_DIR set to a new temporary
directory, so the kernels compile), then again with that cache filled; and the start of an
encoding command once warm: `quantize` of a one-tensor file, which imports bundler, loads
the cached kernels, encodes, writes and exits. The processes cache Python's bytecode, as an
installed package has it (PYTHONDONTWRITEBYTECODE is cleared for them: with it, a checkout
installed in editable mode compiles every module it imports from source at every start).
"""

from __future__ import annotations

import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from bundler.errors import BundlerError, FileNotFound

#: The file types measured, and the goals for a cold and a warm run (seconds).
TYPES = ("Q4_K_M", "Q4_0")
COLD_GOALS = {"Q4_K_M": 20.0, "Q4_0": 5.0}
WARM_START_GOAL = 0.5
#: The start of the line a process prints when it compiles kernels (codecs/kernels.py).
_COMPILE_NOTICE = "bundler: compiling the"
_NO_BYTECODE = "PYTHONDONTWRITEBYTECODE"


def run(source: Path | None = None, repeat: int = 3) -> dict[str, Any]:
    """Cold and warm `quantize` times per file type, and the warm start of a small one.

    `source` is the model quantized (default: the MiniLM SafeTensors, fetched once).
    Warm figures are the best of `repeat` runs; each figure is wall time, with the
    process's CPU time beside it.
    """
    if source is None:
        from bundler.assets import minilm_safetensors

        source = minilm_safetensors()
    if not Path(source).is_file():
        raise FileNotFound(source)
    source = Path(source)
    rows = []
    with tempfile.TemporaryDirectory(prefix="bundler-coldstart-") as tmp:
        work = Path(tmp)
        small = _small_model(work / "small.safetensors")
        for file_type in TYPES:
            cache = work / f"cache-{file_type}"
            cache.mkdir()
            cold = _quantize(source, work, file_type, cache)
            warm = min(_quantize(source, work, file_type, cache) for _ in range(repeat))
            start = min(_quantize(small, work, file_type, cache) for _ in range(repeat))
            rows.append(
                {
                    "type": file_type,
                    "cold_seconds": cold[0],
                    "cold_cpu_seconds": cold[1],
                    "cold_compiled": cold[2],
                    "warm_compiled": warm[2] or start[2],
                    "cold_goal_seconds": COLD_GOALS[file_type],
                    "warm_seconds": warm[0],
                    "warm_cpu_seconds": warm[1],
                    "warm_start_seconds": start[0],
                    "warm_start_cpu_seconds": start[1],
                    "warm_start_goal_seconds": WARM_START_GOAL,
                }
            )
    return {
        "source": str(source),
        "source_bytes": source.stat().st_size,
        "python": sys.version.split()[0],
        "cpus": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None,
        "bytecode_setting_cleared": bool(os.environ.get(_NO_BYTECODE)),
        "results": rows,
    }


def _small_model(path: Path) -> Path:
    """A one-tensor float32 SafeTensors file (256 x 256) for the start-up measurement."""
    import bundler

    x = np.random.default_rng(0).standard_normal((256, 256)).astype(np.float32)
    bundler.save({"blk.0.ffn_down.weight": x}, path)
    return path


def _quantize(source: Path, work: Path, file_type: str, cache: Path) -> tuple[float, float, bool]:
    """Wall and CPU seconds of one `bundler quantize` process with the kernel cache in
    `cache` (CPU time, user and system, moves less than wall time on a shared machine), and
    whether it compiled kernels (it said so on stderr)."""
    out = work / f"out-{file_type}.gguf"
    env = child_environment(cache)
    cmd = [sys.executable, "-m", "bundler", "quantize", str(source), "-o", str(out)]
    cpu = _children_cpu()
    started = time.perf_counter()
    done = subprocess.run(
        [*cmd, "--type", file_type, "--force"], env=env, capture_output=True, text=True
    )
    seconds = time.perf_counter() - started
    if done.returncode:
        raise BundlerError(f"{' '.join(cmd)} exited {done.returncode}: {done.stderr.strip()}")
    return seconds, _children_cpu() - cpu, _COMPILE_NOTICE in done.stderr


def child_environment(cache: Path) -> dict[str, str]:
    """The environment of a measured process: this one's, the kernel cache in `cache`, and
    Python's bytecode cached (see the module's docstring)."""
    env = {k: v for k, v in os.environ.items() if k != _NO_BYTECODE}
    env["NUMBA_CACHE_DIR"] = str(cache)
    return env


def _children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime
