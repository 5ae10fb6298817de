"""`benchmark ORIGINAL QUANTIZED`: each model measured under ONNX Runtime in a fresh
process of its own (so that peak memory is its own): session load time, inference latency
(warm-up runs, then median and p90 over N runs on the same generated inputs), peak resident
memory, and file size."""

from __future__ import annotations

import concurrent.futures
import multiprocessing
import os
import resource
import time
from typing import Any

import numpy as np

from bundler.containers.onnx.reader import files_size, load_model


def _rss_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def measure(
    path: str,
    shapes: dict[str, tuple[int, ...]],
    values: dict[str, float],
    runs: int,
    warmup: int,
    threads: int | None,
    seed: int,
) -> dict[str, Any]:
    """Measure one model in this process (run it in a fresh one: see `benchmark`)."""
    from bundler.containers.onnx import runtime

    deps_loaded = runtime.deps.onnxruntime()
    del deps_loaded
    baseline = _rss_bytes()
    start = time.perf_counter()
    sess = runtime.session(path, threads)
    load = time.perf_counter() - start
    feeds = runtime.make_inputs(sess, shapes, np.random.default_rng(seed), values)
    for _ in range(warmup):
        runtime.run(sess, path, feeds)
    times = []
    for _ in range(runs):
        t0 = time.perf_counter()
        runtime.run(sess, path, feeds)
        times.append(time.perf_counter() - t0)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    return {
        "load_seconds": load,
        "latency_median_seconds": float(np.median(times)),
        "latency_p90_seconds": float(np.percentile(times, 90)),
        "latency_min_seconds": float(min(times)),
        "peak_rss_bytes": peak,
        "peak_above_start_bytes": max(0, peak - baseline),
        "inputs": {k: list(v.shape) for k, v in feeds.items()},
    }


def _in_fresh_process(*args: Any) -> dict[str, Any]:
    context = multiprocessing.get_context("spawn")
    with concurrent.futures.ProcessPoolExecutor(1, mp_context=context) as pool:
        return pool.submit(measure, *args).result()


def benchmark(
    original: str,
    quantized: str,
    *,
    shapes: dict[str, tuple[int, ...]] | None = None,
    values: dict[str, float] | None = None,
    runs: int = 50,
    warmup: int = 5,
    threads: int | None = None,
    seed: int = 0,
) -> dict[str, Any]:
    """Both models measured one after the other, each in its own process."""
    from bundler.containers.onnx.runtime import session

    # a model ONNX Runtime cannot run fails here, with its typed error
    _same_inputs(original, session(original), quantized, session(quantized))
    result: dict[str, Any] = {"runs": runs, "warmup": warmup, "threads": threads}
    for key, path in (("original", original), ("quantized", quantized)):
        row = _in_fresh_process(path, shapes or {}, values or {}, runs, warmup, threads, seed)
        row["path"] = path
        row["file_bytes"] = files_size(path, load_model(path))
        result[key] = row
    a, b = result["original"], result["quantized"]
    result["ratios"] = {
        k: (b[k] / a[k] if a[k] else None)
        for k in (
            "load_seconds", "latency_median_seconds", "latency_p90_seconds",
            "peak_above_start_bytes", "file_bytes",
        )
    }  # fmt: skip
    return result


def _same_inputs(original: str, a: Any, quantized: str, b: Any) -> None:
    """A usage error unless both sessions take the same named inputs of the same types (the
    same generated inputs feed both, so that the timings compare)."""
    from bundler.errors import UsageError

    ins = [{i.name: i.type for i in s.get_inputs()} for s in (a, b)]
    if ins[0] != ins[1]:
        raise UsageError(
            f"{original} and {quantized} take different inputs "
            f"({_signature(ins[0])} vs {_signature(ins[1])}); benchmark compares one model "
            "with its own quantization"
        )


def _signature(inputs: dict[str, str]) -> str:
    return ", ".join(f"{k}: {v}" for k, v in inputs.items()) or "none"
