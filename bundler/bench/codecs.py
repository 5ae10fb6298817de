"""`bundler bench codecs`: encode/decode throughput and memory per codec, this project beside
the `gguf` package's `quants` module (and the C library when it is built), in one run.
"""

from __future__ import annotations

import argparse
import platform
from typing import Any

import numpy as np

from bundler.bench.measure import MIB, median_seconds, peak_alloc_bytes, progress
from bundler.cli.output import emit, table
from bundler.codecs import get, set_threads

#: Codecs measured by default: those the gguf package can also encode, plus the K-quants.
DEFAULT_CODECS = ("q4_0", "q4_1", "q5_0", "q5_1", "q8_0", "f16", "bf16")
K_QUANTS = ("q2_k", "q3_k", "q4_k", "q5_k", "q6_k")
SEED = 20260101


def bench_input(rows: int, cols: int) -> np.ndarray:
    """The seeded weight-like input: normal, std 0.02, float32."""
    rng = np.random.default_rng(SEED)
    return (rng.standard_normal((rows, cols), dtype=np.float32) * np.float32(0.02)).astype(
        np.float32
    )


def _gguf_pair(name: str):
    """(quantize, dequantize) of the gguf package for `name`, or Nones where it has none."""
    import gguf

    qtype = gguf.GGMLQuantizationType[name.upper()]
    quantize = None
    if name not in K_QUANTS:

        def quantize(x):
            return gguf.quants.quantize(x, qtype)

    def dequantize(raw):
        return gguf.quants.dequantize(raw, qtype)

    return quantize, dequantize


def _c_pair(name: str, threads: int):
    """(quantize, dequantize) of the C library, or (None, None) when it is not built."""
    try:
        from bundler.reference import ggml_c

        ggml_c.library(build=False)
    except Exception:
        return None, None
    return (
        lambda x: ggml_c.quantize(name, x, threads=threads),
        lambda raw, shape: ggml_c.dequantize(name, raw, shape),
    )


def _rate(nbytes: int, seconds: float | None) -> float | None:
    return None if not seconds else nbytes / MIB / seconds


def _measure_codec(name: str, x: np.ndarray, threads: int, repeat: int) -> dict[str, Any]:
    codec = get(name)
    encoded = codec.encode(x)  # warm-up: compiles or loads the cached kernels
    values = codec.decode(encoded)
    row: dict[str, Any] = {"codec": name, "threads": threads, "input_bytes": x.nbytes}
    # Timed into reused output buffers, as the conversion pipeline runs them: a fresh 64 MiB
    # array costs page faults that serialise the threads. The memory figures below are for
    # calls that allocate their output.
    row["ours_encode_mib_s"] = _rate(
        x.nbytes, median_seconds(lambda: codec.encode(x, out=encoded), repeat)
    )
    row["ours_decode_mib_s"] = _rate(
        x.nbytes, median_seconds(lambda: codec.decode(encoded, out=values), repeat)
    )
    row["output_bytes"] = encoded.nbytes
    row["ours_encode_extra_bytes"] = peak_alloc_bytes(lambda: codec.encode(x)) - encoded.nbytes
    row["ours_decode_extra_bytes"] = peak_alloc_bytes(lambda: codec.decode(encoded)) - x.nbytes
    _measure_gguf(row, name, x, encoded, repeat)
    _measure_c(row, name, x, encoded, threads, repeat)
    for ref in ("gguf", "c"):
        for op in ("encode", "decode"):
            theirs = row.get(f"{ref}_{op}_mib_s")
            row[f"ratio_{op}_vs_{ref}"] = row[f"ours_{op}_mib_s"] / theirs if theirs else None
    return row


def _measure_gguf(row, name, x, encoded, repeat) -> None:
    quantize, dequantize = _gguf_pair(name)
    row["gguf_encode_mib_s"] = row["gguf_encode_extra_bytes"] = row["gguf_exact"] = None
    if quantize is not None:
        theirs = np.asarray(quantize(x))
        row["gguf_exact"] = bool(np.array_equal(theirs.view(np.uint8), encoded))
        row["gguf_encode_mib_s"] = _rate(x.nbytes, median_seconds(lambda: quantize(x), repeat))
        row["gguf_encode_extra_bytes"] = peak_alloc_bytes(lambda: quantize(x)) - theirs.nbytes
    row["gguf_decode_mib_s"] = _rate(x.nbytes, median_seconds(lambda: dequantize(encoded), repeat))


def _measure_c(row, name, x, encoded, threads, repeat) -> None:
    quantize, dequantize = _c_pair(name, threads)
    row["c_encode_mib_s"] = row["c_decode_mib_s"] = row["c_exact"] = None
    if quantize is None:
        return
    row["c_exact"] = bool(np.array_equal(quantize(x), encoded))
    row["c_encode_mib_s"] = _rate(x.nbytes, median_seconds(lambda: quantize(x), repeat))
    row["c_decode_mib_s"] = _rate(
        x.nbytes, median_seconds(lambda: dequantize(encoded, x.shape), repeat)
    )


def _codec_list(spec: str | None) -> list[str]:
    if spec:
        return [get(n).name for n in spec.split(",") if n.strip()]
    names = list(DEFAULT_CODECS)
    for k in K_QUANTS:
        try:
            get(k).kernel()
            names.append(k)
        except Exception:
            pass
    return names


def _thread_list(spec: str | None) -> list[int]:
    import numba

    if not spec:
        most = numba.config.NUMBA_NUM_THREADS
        return sorted({1, most})
    return [int(t) for t in str(spec).split(",")]


def run(args: argparse.Namespace) -> dict[str, Any]:
    """Measure every requested codec at every requested thread count."""
    x = bench_input(args.rows, args.cols)
    rows = []
    jobs = [(t, n) for t in _thread_list(args.threads) for n in _codec_list(args.codecs)]
    for threads, name in progress(jobs, "bench codecs"):
        set_threads(threads)
        rows.append(_measure_codec(name, x, threads, args.repeat))
    set_threads(None)
    return {
        "input": {"rows": args.rows, "cols": args.cols, "std": 0.02, "seed": SEED},
        "machine": {"cpus": _cpus(), "processor": platform.processor() or platform.machine()},
        "results": rows,
    }


def _cpus() -> int:
    import os

    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()


def _fmt(v: float | None, spec: str = ".0f") -> str:
    return "-" if v is None else format(v, spec)


def _exact(row: dict[str, Any]) -> str:
    marks = [row.get("gguf_exact"), row.get("c_exact")]
    known = [m for m in marks if m is not None]
    return "-" if not known else ("yes" if all(known) else "NO")


def human(report: dict[str, Any]) -> str:
    body = [
        [
            r["codec"],
            r["threads"],
            _fmt(r["ours_encode_mib_s"]),
            _fmt(r["gguf_encode_mib_s"]),
            _fmt(r["ratio_encode_vs_gguf"], ".1f"),
            _fmt(r["c_encode_mib_s"]),
            _fmt(r["ratio_encode_vs_c"], ".2f"),
            _fmt(r["ours_decode_mib_s"]),
            _fmt(r["gguf_decode_mib_s"]),
            _fmt(r["ratio_decode_vs_gguf"], ".1f"),
            _fmt(r["c_decode_mib_s"]),
            _fmt(r["ratio_decode_vs_c"], ".2f"),
            _fmt(r["ours_encode_extra_bytes"] / MIB, ".1f"),
            _fmt(
                None
                if r["gguf_encode_extra_bytes"] is None
                else r["gguf_encode_extra_bytes"] / MIB,
                ".1f",
            ),
            _exact(r),
        ]
        for r in report["results"]
    ]
    head = [
        "codec",
        "thr",
        "enc",
        "gguf",
        "x",
        "C",
        "x",
        "dec",
        "gguf",
        "x",
        "C",
        "x",
        "extra MiB",
        "gguf extra",
        "exact",
    ]
    inp = report["input"]
    title = (
        f"{inp['rows']}x{inp['cols']} float32 (std {inp['std']}, seed {inp['seed']}), "
        f"MiB/s of float32, medians; extra = memory allocated beyond the output"
    )
    return title + "\n" + table(body, head, "<>" + ">" * 12 + "<")


def main(args: argparse.Namespace) -> int:
    emit(args, run(args), human)
    return 0
