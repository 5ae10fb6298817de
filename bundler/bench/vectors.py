"""`bundler bench vectors`: batch encode and decode time per vector of each scheme on one
core, beside faiss's scalar quantizers measured in the same run and lnmp-quant's published
per-vector figures (measured by its authors on other hardware).

Times are CPU time of the measuring thread (time.thread_time; bundler's kernels and faiss
with one OpenMP thread both run on it), bundler's and faiss's runs interleaved, medians of
`repeat` rounds, each round timing enough calls in a row to take about a millisecond (so
the clock's own cost stays out); the load average is reported beside them. Two batches by
default: 256 vectors of 512 values (512 KB in, up to 512 KB out) stay in one core's cache,
as lnmp-quant's one-vector measurement does; 10,000 (20 MB in) go through the memory bus,
whose floors are shown beside them: libc's memset of the decoded floats and numpy's max
of the input (reading it once).
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import os
import platform
import time
from collections.abc import Iterator
from typing import Any

import numpy as np

from bundler.bench.measure import median_thread_seconds, progress
from bundler.codecs.vectors.schemes import Scheme, dequantize, quantize_matrix
from bundler.texttable import table

SEED = 20260513

#: lnmp-quant's published time per 512-value vector, nanoseconds (quantize, dequantize);
#: its README's figures, measured on its authors' machine, not here.
LNMP_PUBLISHED_NS = {
    Scheme.QINT8: (1170.0, 457.0),
    Scheme.QINT4: (600.0, 230.0),
    Scheme.BINARY: (200.0, 100.0),
    Scheme.FP16: (300.0, 150.0),
}

#: The faiss encoder beside each scheme (faiss has no float-to-binary encoder).
FAISS_QUANTIZER = {Scheme.QINT8: "QT_8bit", Scheme.QINT4: "QT_4bit", Scheme.FP16: "QT_fp16"}


def bench_input(vectors: int, dim: int) -> np.ndarray:
    """Seeded Gaussian vectors, float32."""
    rng = np.random.default_rng(SEED)
    return rng.standard_normal((vectors, dim), dtype=np.float32)


@contextlib.contextmanager
def _one_core() -> Iterator[None]:
    """This process (and faiss's OpenMP pool) on one core, restored afterwards."""
    cores = os.sched_getaffinity(0) if hasattr(os, "sched_getaffinity") else None
    # the compiler counts its threads from the affinity when it loads: load it on all cores
    import numba  # noqa: F401

    faiss = None
    with contextlib.suppress(ImportError):
        import faiss
    threads = faiss.omp_get_max_threads() if faiss else None
    try:
        if cores:
            os.sched_setaffinity(0, {min(cores)})
        if faiss:
            faiss.omp_set_num_threads(1)
        yield
    finally:
        if cores:
            os.sched_setaffinity(0, cores)
        if faiss:
            faiss.omp_set_num_threads(threads)


def _faiss(scheme: Scheme, x: np.ndarray) -> tuple[dict[str, Any], dict[str, Any]]:
    """faiss's label for the row, and its encode and decode calls (warmed up)."""
    try:
        import faiss
    except ImportError:
        return {"faiss": "not installed (pip install 'bundler[vectors]')"}, {}
    name = FAISS_QUANTIZER.get(scheme)
    if name is None:
        return {"faiss": "no encoder (IndexBinaryFlat takes packed bits)"}, {}
    sq = faiss.ScalarQuantizer(x.shape[1], getattr(faiss.ScalarQuantizer, name))
    sq.train(x)
    codes = sq.compute_codes(x)
    sq.decode(codes)
    calls = {"faiss_encode": lambda: sq.compute_codes(x), "faiss_decode": lambda: sq.decode(codes)}
    return {"faiss": f"ScalarQuantizer {name}"}, calls


#: Each timed sample runs calls in a row for about this long (CPU seconds).
SAMPLE_SECONDS = 1e-3


def _looped(fn: Any, k: int) -> Any:
    def calls() -> None:
        for _ in range(k):
            fn()

    return calls


def _samples(calls: dict[str, Any]) -> tuple[dict[str, Any], dict[str, int]]:
    """Each call repeated in a loop long enough for one sample, and its repetitions."""
    loops = {}
    for name, fn in calls.items():
        start = time.thread_time()
        fn()
        once = time.thread_time() - start
        loops[name] = max(1, min(10_000, round(SAMPLE_SECONDS / max(once, 1e-7))))
    return {name: _looped(fn, loops[name]) for name, fn in calls.items()}, loops


def measure(scheme: Scheme, x: np.ndarray, repeat: int) -> dict[str, Any]:
    """Median thread CPU time per vector to quantize and to dequantize the batch x (into a
    reused output, and into a new one), faiss's encoder's, memset's of the decoded floats
    and numpy's max of the input (the machine's floors for writing and reading them),
    interleaved."""
    n = len(x)
    q = quantize_matrix(x, scheme)  # warm-up: loads the compiled kernels
    out = dequantize(q)
    row, calls = _faiss(scheme, x)
    calls = {
        "encode": lambda: quantize_matrix(x, scheme),
        "decode": lambda: dequantize(q, out=out),
        "decode_new": lambda: dequantize(q),
        "memset": lambda: ctypes.memset(out.ctypes.data, 0, out.nbytes),
        "read": lambda: np.max(x),
    } | calls
    looped, loops = _samples(calls)
    seconds = median_thread_seconds(looped, repeat)
    ns = {name: 1e9 * t / (n * loops[name]) for name, t in seconds.items()}
    lnmp_encode, lnmp_decode = LNMP_PUBLISHED_NS[scheme]
    return (
        {
            "scheme": scheme.value,
            "vectors": n,
            "encode_ns": ns["encode"],
            "decode_ns": ns["decode"],
            "decode_new_output_ns": ns["decode_new"],
            "memset_decoded_floats_ns": ns["memset"],
            "max_of_input_ns": ns["read"],
            "lnmp_published_encode_ns": lnmp_encode,
            "lnmp_published_decode_ns": lnmp_decode,
            "encode_speedup_vs_lnmp": lnmp_encode / ns["encode"],
            "decode_speedup_vs_lnmp": lnmp_decode / ns["decode"],
        }
        | row
        | {f"{k}_ns": v for k, v in ns.items() if k.startswith("faiss")}
    )


def run(args: argparse.Namespace) -> dict[str, Any]:
    """Measure every scheme on seeded batches of each size in `args.vectors`, one core."""
    batches = [args.vectors] if isinstance(args.vectors, int) else list(args.vectors)
    load_start = list(os.getloadavg())
    rows = []
    with _one_core():
        for vectors in batches:
            x = bench_input(vectors, args.dim)
            todo = progress(list(Scheme), f"bench vectors ({vectors})")
            rows += [measure(s, x, args.repeat) for s in todo]
    return {
        "input": {"vectors": batches, "dim": args.dim, "seed": SEED, "repeat": args.repeat},
        "machine": {
            "processor": platform.processor() or platform.machine(),
            "cores_used": 1,
            "clock": "thread CPU time (time.thread_time)",
            "load_average": {"start": load_start, "end": list(os.getloadavg())},
        },
        "lnmp_note": "lnmp-quant's figures are its published ones, measured on other hardware",
        "results": rows,
    }


def _ns(v: float | None) -> str:
    return "-" if v is None else f"{v:,.0f}"


def human(report: dict[str, Any]) -> str:
    head = [
        "scheme", "encode ns", "decode ns", "lnmp enc*", "lnmp dec*", "enc speedup",
        "dec speedup", "new output", "memset", "read", "faiss enc", "faiss dec", "faiss encoder",
    ]  # fmt: skip
    i = report["input"]
    load = report["machine"]["load_average"]
    parts = [
        f"thread CPU time per vector of {i['dim']} values, one core, median of {i['repeat']} "
        f"interleaved rounds; load average {load['start'][0]:.2f} -> {load['end'][0]:.2f}\n"
        "* lnmp-quant's published figures, measured on other hardware. decode: into a reused "
        "output; new output: into a new array each call; memset: writing the decoded floats; "
        "read: numpy's max of the input floats"
    ]
    for vectors in i["vectors"]:
        body = [
            [
                r["scheme"],
                _ns(r["encode_ns"]),
                _ns(r["decode_ns"]),
                _ns(r["lnmp_published_encode_ns"]),
                _ns(r["lnmp_published_decode_ns"]),
                f"{r['encode_speedup_vs_lnmp']:.1f}x",
                f"{r['decode_speedup_vs_lnmp']:.1f}x",
                _ns(r["decode_new_output_ns"]),
                _ns(r["memset_decoded_floats_ns"]),
                _ns(r["max_of_input_ns"]),
                _ns(r.get("faiss_encode_ns")),
                _ns(r.get("faiss_decode_ns")),
                r["faiss"],
            ]
            for r in report["results"]
            if r["vectors"] == vectors
        ]
        title = f"\nbatch of {vectors:,} vectors\n"
        parts.append(title + table(body, head, "<" + ">" * 11 + "<"))
    return "\n".join(parts)
