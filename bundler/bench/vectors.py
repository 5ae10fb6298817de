"""`bundler bench vectors`: batch encode and decode time per vector of each scheme on one
core, beside faiss's scalar quantizers measured in the same run and lnmp-quant's published
per-vector figures (measured by its authors on other hardware).

Times are CPU time of the measuring thread (time.thread_time; bundler's kernels and faiss
with one OpenMP thread both run on it), bundler's and faiss's runs interleaved, medians of
`repeat` rounds; the load average is reported beside them. The default batch (256 vectors
of 512 values: 512 KB in, up to 512 KB out) stays in one core's cache, as lnmp-quant's
one-vector measurement does; larger batches add the memory bus, shared on a busy machine.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import platform
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


def measure(scheme: Scheme, x: np.ndarray, repeat: int) -> dict[str, Any]:
    """Median thread CPU time per vector to quantize and to dequantize the batch x, and
    faiss's encoder's, interleaved."""
    n = len(x)
    q = quantize_matrix(x, scheme)  # warm-up: loads the compiled kernels
    out = dequantize(q)
    row, calls = _faiss(scheme, x)
    calls = {
        "encode": lambda: quantize_matrix(x, scheme),
        "decode": lambda: dequantize(q, out=out),
    } | calls
    ns = {name: 1e9 * t / n for name, t in median_thread_seconds(calls, repeat).items()}
    lnmp_encode, lnmp_decode = LNMP_PUBLISHED_NS[scheme]
    return (
        {
            "scheme": scheme.value,
            "encode_ns": ns["encode"],
            "decode_ns": ns["decode"],
            "lnmp_published_encode_ns": lnmp_encode,
            "lnmp_published_decode_ns": lnmp_decode,
            "encode_speedup_vs_lnmp": lnmp_encode / ns["encode"],
            "decode_speedup_vs_lnmp": lnmp_decode / ns["decode"],
        }
        | row
        | {f"{k}_ns": v for k, v in ns.items() if k.startswith("faiss")}
    )


def run(args: argparse.Namespace) -> dict[str, Any]:
    """Measure every scheme on a seeded batch, one core."""
    x = bench_input(args.vectors, args.dim)
    load_start = list(os.getloadavg())
    with _one_core():
        rows = [measure(s, x, args.repeat) for s in progress(list(Scheme), "bench vectors")]
    return {
        "input": {"vectors": args.vectors, "dim": args.dim, "seed": SEED, "repeat": args.repeat},
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
    body = [
        [
            r["scheme"],
            _ns(r["encode_ns"]),
            _ns(r["decode_ns"]),
            _ns(r["lnmp_published_encode_ns"]),
            _ns(r["lnmp_published_decode_ns"]),
            f"{r['encode_speedup_vs_lnmp']:.1f}x",
            f"{r['decode_speedup_vs_lnmp']:.1f}x",
            _ns(r.get("faiss_encode_ns")),
            _ns(r.get("faiss_decode_ns")),
            r["faiss"],
        ]
        for r in report["results"]
    ]
    head = [
        "scheme", "encode ns", "decode ns", "lnmp enc*", "lnmp dec*", "enc speedup",
        "dec speedup", "faiss enc", "faiss dec", "faiss encoder",
    ]  # fmt: skip
    i = report["input"]
    load = report["machine"]["load_average"]
    title = (
        f"thread CPU time per vector, batch of {i['vectors']} vectors of {i['dim']} values, one "
        f"core, median of {i['repeat']} interleaved rounds; load average "
        f"{load['start'][0]:.2f} -> {load['end'][0]:.2f}\n"
        "* lnmp-quant's published figures, measured on other hardware"
    )
    return title + "\n" + table(body, head, "<" + ">" * 8 + "<")
