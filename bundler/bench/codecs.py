"""`bundler bench codecs`: encode/decode throughput and memory per codec, this project beside
the `gguf` package's `quants` module (and the C library when it is built), in one run; with
`weighted`, also the weighted encoders (an importance row, as llama-quantize --imatrix
passes) beside the C library given the same row.
"""

from __future__ import annotations

import importlib
import platform
from typing import Any

import numpy as np

from bundler.bench.measure import MIB, median_seconds, peak_alloc_bytes, progress
from bundler.codecs import get, set_threads

#: Codecs measured by default: those the gguf package can also encode, plus the K-quants and
#: the non-linear, ternary and FP4 codecs.
DEFAULT_CODECS = ("q4_0", "q4_1", "q5_0", "q5_1", "q8_0", "f16", "bf16")
K_QUANTS = ("q2_k", "q3_k", "q4_k", "q5_k", "q6_k")
OTHER_CODECS = (
    "iq4_nl", "iq4_xs", "iq3_xxs", "iq3_s", "iq2_xxs", "iq2_xs", "iq2_s", "iq1_s", "iq1_m",
    "tq1_0", "tq2_0", "mxfp4", "nvfp4", "q1_0", "q2_0",
)  # fmt: skip
SEED = 20260101


def bench_input(rows: int, cols: int) -> np.ndarray:
    """The seeded weight-like input: normal, std 0.02, float32."""
    rng = np.random.default_rng(SEED)
    return (rng.standard_normal((rows, cols), dtype=np.float32) * np.float32(0.02)).astype(
        np.float32
    )


def bench_importance(cols: int) -> np.ndarray:
    """The seeded importance row of the weighted measurements: positive, spread over orders
    of magnitude as llama-imatrix's mean squared activations are."""
    rng = np.random.default_rng(SEED + 1)
    return np.exp(rng.normal(0.0, 2.0, cols)).astype(np.float32)


def _gguf_pair(name: str):
    """(quantize, dequantize) of the gguf package for `name`, None for a direction it lacks
    (found by asking it for one block: its coverage differs between releases)."""
    import gguf

    qtype = getattr(gguf.GGMLQuantizationType, name.upper(), None)
    if qtype is None:
        return None, None
    codec = get(name)

    def quantize(x):
        return gguf.quants.quantize(x, qtype)

    def dequantize(raw):
        return gguf.quants.dequantize(raw, qtype)

    probe = np.zeros((1, codec.facts.block_size), np.float32)
    return _if_implemented(quantize, probe), _if_implemented(dequantize, codec.encode(probe))


def _if_implemented(call, sample):
    """`call`, or None when the gguf package raises NotImplementedError on `sample`."""
    try:
        call(sample)
    except NotImplementedError:
        return None
    return call


def _c_pair(name: str, threads: int, importance: np.ndarray | None = None):
    """(quantize, dequantize) of the C library, or (None, None) when it is not built or
    the codec is not a GGML type (aprender's); each writes into a buffer of its own made on
    its first call, as bundler's are timed writing into the arrays of an earlier call."""
    if get(name).facts.ggml_id is None:
        return None, None
    try:
        ggml_c = importlib.import_module("tools.reference.ggml_c")

        ggml_c.library(build=False)
    except Exception:
        return None, None
    quantize = dequantize = None
    kept: dict[str, np.ndarray] = {}
    if ggml_c.can_quantize(name, imatrix=importance is not None):

        def quantize(x):
            out = ggml_c.quantize(
                name, x, threads=threads, imatrix=importance, out=kept.get("encoded")
            )
            kept["encoded"] = out
            return out

    if ggml_c.can_dequantize(name):

        def dequantize(raw, shape):
            out = ggml_c.dequantize(name, raw, shape, threads=threads, out=kept.get("values"))
            kept["values"] = out
            return out

    return quantize, dequantize


def _rate(nbytes: int, seconds: float | None) -> float | None:
    return None if not seconds else nbytes / MIB / seconds


def _measure_codec(
    name: str, x: np.ndarray, threads: int, repeat: int, importance: np.ndarray | None = None
) -> dict[str, Any]:
    """One row; with `importance`, the weighted encoder's (decoding is the same codec's, so
    its decode and gguf figures are None: the gguf package has no weighted quantizer)."""
    codec = get(name)
    weighted = importance is not None
    encoded = codec.encode(x, importance=importance)  # warm-up: compiles or loads the kernels
    values = codec.decode(encoded, shape=x.shape)  # flat codecs need it
    row: dict[str, Any] = {"codec": name, "threads": threads, "input_bytes": x.nbytes}
    row["weighted"] = weighted
    # Timed into reused output buffers, as the conversion pipeline runs them: a fresh 64 MiB
    # array costs page faults that serialise the threads. The memory figures below are for
    # calls that allocate their output.
    row["ours_encode_mib_s"] = _rate(
        x.nbytes,
        median_seconds(lambda: codec.encode(x, out=encoded, importance=importance), repeat),
    )
    row["ours_decode_mib_s"] = None
    if not weighted:
        row["ours_decode_mib_s"] = _rate(
            x.nbytes,
            median_seconds(lambda: codec.decode(encoded, shape=x.shape, out=values), repeat),
        )
    row["output_bytes"] = encoded.nbytes
    row["ours_encode_extra_bytes"] = (
        peak_alloc_bytes(lambda: codec.encode(x, importance=importance)) - encoded.nbytes
    )
    row["ours_decode_extra_bytes"] = (
        None
        if weighted
        else peak_alloc_bytes(lambda: codec.decode(encoded, shape=x.shape)) - x.nbytes
    )
    if weighted:
        row["gguf_encode_mib_s"] = row["gguf_encode_extra_bytes"] = row["gguf_exact"] = None
        row["gguf_decode_mib_s"] = None
    else:
        _measure_gguf(row, name, x, encoded, repeat)
    _measure_c(row, name, x, encoded, threads, repeat, importance)
    for ref in ("gguf", "c"):
        for op in ("encode", "decode"):
            theirs = row.get(f"{ref}_{op}_mib_s")
            ours = row[f"ours_{op}_mib_s"]
            row[f"ratio_{op}_vs_{ref}"] = ours / theirs if ours and theirs else None
    return row


def _measure_gguf(row, name, x, encoded, repeat) -> None:
    quantize, dequantize = _gguf_pair(name)
    row["gguf_encode_mib_s"] = row["gguf_encode_extra_bytes"] = row["gguf_exact"] = None
    if quantize is not None:
        theirs = np.asarray(quantize(x))
        row["gguf_exact"] = bool(np.array_equal(theirs.view(np.uint8), encoded))
        row["gguf_encode_mib_s"] = _rate(x.nbytes, median_seconds(lambda: quantize(x), repeat))
        row["gguf_encode_extra_bytes"] = peak_alloc_bytes(lambda: quantize(x)) - theirs.nbytes
    row["gguf_decode_mib_s"] = None
    if dequantize is not None:
        seconds = median_seconds(lambda: dequantize(encoded), repeat)
        row["gguf_decode_mib_s"] = _rate(x.nbytes, seconds)


def _measure_c(row, name, x, encoded, threads, repeat, importance=None) -> None:
    quantize, dequantize = _c_pair(name, threads, importance)
    row["c_encode_mib_s"] = row["c_decode_mib_s"] = row["c_exact"] = None
    if quantize is not None:
        row["c_exact"] = bool(np.array_equal(quantize(x), encoded))
        row["c_encode_mib_s"] = _rate(x.nbytes, median_seconds(lambda: quantize(x), repeat))
    if importance is not None or dequantize is None:
        return
    row["c_decode_mib_s"] = _rate(
        x.nbytes, median_seconds(lambda: dequantize(encoded, x.shape), repeat)
    )


def _codec_list(spec: str | None) -> list[str]:
    if spec:
        return [get(n).name for n in spec.split(",") if n.strip()]
    names = list(DEFAULT_CODECS)
    for k in (*K_QUANTS, *OTHER_CODECS):
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


def run(
    codecs: str | None = None,
    rows: int = 4096,
    cols: int = 4096,
    threads: str | None = None,
    repeat: int = 5,
    weighted: bool = False,
) -> dict[str, Any]:
    """Measure every requested codec (comma-separated names; default: all legacy) at every
    requested thread count (comma-separated; default: 1 and all cores); `weighted` adds a
    row per codec that takes importance weights, encoding with `bench_importance`."""
    x = bench_input(rows, cols)
    importance = bench_importance(cols)
    results = []
    names = _codec_list(codecs)
    # codecs ggml quantizes only with an importance matrix are measured with it in any case
    needs = {n for n in names if get(n).facts.requires_importance}
    jobs = [
        (t, n, importance if n in needs else None) for t in _thread_list(threads) for n in names
    ]
    if weighted:
        with_weights = [n for n in names if get(n).facts.takes_importance and n not in needs]
        jobs += [(t, n, importance) for t in _thread_list(threads) for n in with_weights]
    for count, name, weights in progress(jobs, "bench codecs"):
        set_threads(count)
        results.append(_measure_codec(name, x, count, repeat, weights))
    set_threads(None)
    _versus_single_thread_c(results)
    return {
        "input": {"rows": rows, "cols": cols, "std": 0.02, "seed": SEED},
        "importance": {"distribution": "lognormal(0, 2)", "seed": SEED + 1}
        if weighted or needs
        else None,
        "machine": {"cpus": _cpus(), "processor": platform.processor() or platform.machine()},
        "results": results,
    }


def _versus_single_thread_c(results: list[dict[str, Any]]) -> None:
    """Each row's encode speed over the C library's on one thread (same codec, weighted or
    not), the measure of the project's speed goal; None without a one-thread C figure."""
    single = {
        (r["codec"], r["weighted"]): r["c_encode_mib_s"] for r in results if r["threads"] == 1
    }
    for r in results:
        theirs = single.get((r["codec"], r["weighted"]))
        r["ratio_encode_vs_c_1_thread"] = r["ours_encode_mib_s"] / theirs if theirs else None


def _cpus() -> int:
    import os

    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
