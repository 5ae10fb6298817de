"""Timing and memory measurement shared by the benchmarks."""

from __future__ import annotations

import statistics
import sys
import time
import tracemalloc
from collections.abc import Callable, Iterable
from typing import Any, TypeVar

T = TypeVar("T")
MIB = float(1 << 20)


def median_seconds(fn: Callable[[], Any], repeat: int) -> float:
    """Median wall time of `repeat` calls of `fn` (after the caller's warm-up)."""
    return median_times(fn, repeat)[0]


def median_times(fn: Callable[[], Any], repeat: int) -> tuple[float, float]:
    """Median wall time and median CPU time (of every thread of the process) of `repeat`
    calls of `fn` (after the caller's warm-up); on a shared machine the CPU time is the
    steadier figure."""
    walls, cpus = [], []
    for _ in range(max(1, repeat)):
        cpu = time.process_time()
        start = time.perf_counter()
        fn()
        walls.append(time.perf_counter() - start)
        cpus.append(time.process_time() - cpu)
    return statistics.median(walls), statistics.median(cpus)


def median_thread_seconds(fns: dict[str, Callable[[], Any]], repeat: int) -> dict[str, float]:
    """Median CPU time of the calling thread (time.thread_time) of each of `fns` over
    `repeat` rounds, the functions interleaved within each round (after the caller's
    warm-up): the steadiest figure for single-threaded code on a shared machine."""
    times: dict[str, list[float]] = {name: [] for name in fns}
    for _ in range(max(1, repeat)):
        for name, fn in fns.items():
            start = time.thread_time()
            fn()
            times[name].append(time.thread_time() - start)
    return {name: statistics.median(t) for name, t in times.items()}


def interleaved(
    rounds: Iterable[Any], fns: dict[str, Callable[[], Any]]
) -> dict[str, tuple[float, float]]:
    """Median wall time and median CPU time (every thread of the process) of each function,
    called once per round in turn, so that a change of load touches all of them alike
    (after the caller's warm-up)."""
    walls: dict[str, list[float]] = {k: [] for k in fns}
    cpus: dict[str, list[float]] = {k: [] for k in fns}
    for _ in rounds:
        for name, fn in fns.items():
            cpu = time.process_time()
            start = time.perf_counter()
            fn()
            walls[name].append(time.perf_counter() - start)
            cpus[name].append(time.process_time() - cpu)
    return {k: (statistics.median(walls[k]), statistics.median(cpus[k])) for k in fns}


def peak_alloc_bytes(fn: Callable[[], Any]) -> int:
    """Peak bytes allocated (Python and numpy heaps) while `fn` runs, over what was live before."""
    tracemalloc.start()
    try:
        tracemalloc.reset_peak()
        base, _ = tracemalloc.get_traced_memory()
        fn()
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    return max(0, peak - base)


def progress(items: Iterable[T], desc: str, total: int | None = None) -> Iterable[T]:
    """A progress bar on stderr when it is a terminal; the bare iterable otherwise."""
    if not sys.stderr.isatty():
        return items
    from tqdm import tqdm

    return tqdm(items, desc=desc, total=total, file=sys.stderr, leave=False)
