"""`bundler bench codecs --affine`: the affine codecs beside ONNX Runtime's own weight
quantizers on the same matrix, in one run.

- int8 per channel: ONNX Runtime's per-channel weight quantization (what `quantize_dynamic
  (per_channel=True)` runs on a MatMul weight: `quant_utils.quantize_data` on each output
  channel, symmetric int8);
- int4 blocks: ONNX Runtime's MatMul 4-bit block quantizer (`MatMulNBitsQuantizer`'s
  `DefaultWeightOnlyQuantizer.qbits_block_quant`, C++), blocks along the input axis, with
  zero points (beside `int4:g32:asym`, `int4:g128:asym`) and symmetric (beside
  `int4:g32:sym:extreme`, its own scale rule; `int4:g32`, compressed-tensors' rule, is shown
  too);
- the calibration methods' speed against MinMax, and Q8_0 / Q4_0 encoding beside MinMax
  int8 per channel and int4 groups of 32.

Every function is timed in the same process, interleaved (one call of each per round), the
median of `repeat` rounds: MiB of float32 per second of wall time and, steadier on a shared
machine, per second of CPU time (every thread of the process: ONNX Runtime's quantizer runs
on its own thread pool, the codecs on numba's). The ratios between bundler's own codecs
(against MinMax, against Q8_0 / Q4_0) come from a second set of interleaved rounds on one
numba thread, timed by the CPU time of that thread alone: no other thread's time (ONNX
Runtime's pool winding down after its call) is charged to them.

ONNX Runtime takes the MatMul weight as [in, out], so it gets the transposed matrix (not
timed); blocks and channels are the same slices. Errors are RMSE of decoded values.
"""

from __future__ import annotations

import argparse
import os
import platform
from collections.abc import Callable
from typing import Any, TypeVar

import numpy as np

from bundler.bench.codecs import SEED, _cpus, bench_input
from bundler.bench.measure import MIB, interleaved, median_thread_seconds, progress
from bundler.codecs import get
from bundler.codecs.affine import AffineCodec
from bundler.extras import require
from bundler.texttable import table

T = TypeVar("T")

#: (our codec, ONNX Runtime's quantizer or None) measured side by side.
PAIRS = (
    ("int8:channel", "ort_int8_channel"),
    ("int4:g32:asym", "ort_4bit_block32_asym"),
    ("int4:g32:sym:extreme", "ort_4bit_block32_sym"),
    ("int4:g32", None),
    ("int4:g128:asym", "ort_4bit_block128_asym"),
    ("int8:channel:mse", None),
    ("int8:channel:entropy", None),
    ("int8:channel:p99.9", None),
    ("int4:g128:asym:mse", None),
    ("int4:g128:asym:entropy", None),
    ("int4:g128:asym:p99.9", None),
)
GGML = ("q8_0", "q4_0")
#: MinMax codecs measured against a GGML block codec of the same width.
GGML_PEERS = {"int8:channel": "q8_0", "int4:g32:asym": "q4_0", "int4:g32:sym:extreme": "q4_0",
              "int4:g32": "q4_0"}  # fmt: skip


def _ort_int8_channel(w_t: np.ndarray):
    from onnx import TensorProto
    from onnxruntime.quantization.quant_utils import quantize_data

    def run():
        return [quantize_data(w_t[:, i], TensorProto.INT8, True) for i in range(w_t.shape[1])]

    def decode(out):
        cols = [(np.asarray(q, np.float32) - np.float32(z)) * np.float32(s) for z, s, q in out]
        return np.stack(cols)  # [out, in]

    return run, decode


def _ort_4bit(w_t: np.ndarray, block: int, symmetric: bool):
    from onnxruntime.quantization.matmul_nbits_quantizer import (
        DefaultWeightOnlyQuantConfig,
        DefaultWeightOnlyQuantizer,
    )

    config = DefaultWeightOnlyQuantConfig(block_size=block, is_symmetric=symmetric, bits=4)
    quantizer = DefaultWeightOnlyQuantizer(config)

    def run():
        return quantizer.qbits_block_quant(w_t)

    def decode(out):
        packed, scales, zero = out
        q, z = ort_4bit_unpack(packed, zero, symmetric)
        n, blocks = scales.shape
        q = q.reshape(n, blocks, -1).astype(np.float32) - z[:, :, None]
        return (q * scales[:, :, None]).reshape(n, -1)

    return run, decode


def ort_4bit_unpack(
    packed: np.ndarray, zero: np.ndarray, symmetric: bool
) -> tuple[np.ndarray, np.ndarray]:
    """ONNX Runtime's 4-bit block output ([N, blocks, block / 2] two codes a byte, low
    nibble first; zero points [N, ceil(blocks / 2)] likewise) as unsigned codes [N, K] and
    zero points [N, blocks] (int64; 8 for symmetric blocks)."""
    n, blocks, half = packed.shape
    q = np.empty((n, blocks, 2 * half), np.int64)
    q[:, :, 0::2] = packed & 0xF
    q[:, :, 1::2] = packed >> 4
    if symmetric:
        return q.reshape(n, -1), np.full((n, blocks), 8, np.int64)
    z = np.empty((n, 2 * zero.shape[1]), np.int64)
    z[:, 0::2] = zero & 0xF
    z[:, 1::2] = zero >> 4
    return q.reshape(n, -1), z[:, :blocks]


def _ort(name: str, w_t: np.ndarray):
    if name == "ort_int8_channel":
        return _ort_int8_channel(w_t)
    block = 32 if "block32" in name else 128
    return _ort_4bit(w_t, block, name.endswith("_sym"))


def _rmse(a: np.ndarray, b: np.ndarray) -> float:
    d = a.astype(np.float64) - b.astype(np.float64)
    return float(np.sqrt(np.mean(d * d)))


def run(args: argparse.Namespace) -> dict[str, Any]:
    """Measure each affine codec, its ONNX Runtime peer, and the GGML references."""
    require(
        "onnxruntime",
        "bench codecs --affine compares with onnxruntime: pip install 'bundler[onnx]'",
    )
    x = bench_input(args.rows, args.cols)
    w_t = np.ascontiguousarray(x.T)
    timed: dict[str, Any] = {}
    rows = []
    for ours, theirs in PAIRS:
        codec = AffineCodec(ours)
        # into the arrays of a first encoding, as the GGML codecs below encode into theirs
        first = codec.encode(x)
        timed[codec.name] = lambda c=codec, r=first: c.encode(x, out=r)
        row: dict[str, Any] = {
            "codec": codec.name,
            "ours_rmse": _rmse(codec.decode(first), x),
            "reference": theirs,
            "reference_rmse": None,
            "ggml": GGML_PEERS.get(ours),
        }
        if theirs is not None:
            go, decode = _ort(theirs, w_t)
            timed[theirs] = go
            row["reference_rmse"] = _rmse(decode(go()), x)
        rows.append(row)
    for name in GGML:
        codec = get(name)
        raw = codec.encode(x)
        timed[name] = lambda c=codec, r=raw: c.encode(x, out=r)
        rows.append({"codec": name, "ours_rmse": _rmse(codec.decode(raw), x), "reference": None,
                     "reference_rmse": None, "ggml": None})  # fmt: skip
    times = interleaved(progress(range(args.repeat), "bench affine", args.repeat), timed)
    ours = {name: timed[name] for name in [r["codec"] for r in rows]}
    single = _one_thread(lambda: median_thread_seconds(ours, args.repeat))
    for row in rows:
        _speeds(row, x, times, single)
    return {
        "input": {"rows": args.rows, "cols": args.cols, "std": 0.02, "seed": SEED},
        "machine": {"cpus": _cpus(), "processor": platform.processor() or platform.machine()},
        "load_average": list(os.getloadavg()),
        "method": "interleaved rounds in one process, medians; CPU time of every thread; "
        "bundler's codecs encode into the arrays of an earlier encoding (out=); "
        "ratios between bundler codecs: CPU time of one thread, numba on one thread",
        "repeat": args.repeat,
        "results": rows,
    }


def _one_thread(measure: Callable[[], T]) -> T:
    """`measure()` with numba's parallel loops on one thread."""
    import numba

    before = numba.get_num_threads()
    numba.set_num_threads(1)
    try:
        return measure()
    finally:
        numba.set_num_threads(before)


def _speeds(
    row: dict[str, Any],
    x: np.ndarray,
    times: dict[str, tuple[float, float]],
    single: dict[str, float],
) -> None:
    """Fill a row's rates and ratios from the interleaved medians (`single`: seconds of
    one thread's CPU time, for the ratios between bundler's codecs)."""
    rate = {k: (x.nbytes / MIB / w, x.nbytes / MIB / c if c > 0 else None)
            for k, (w, c) in times.items()}  # fmt: skip
    one = {k: x.nbytes / MIB / c if c > 0 else None for k, c in single.items()}
    name = row["codec"]
    row["ours_encode_mib_s"], row["ours_encode_cpu_mib_s"] = rate[name]
    row["ours_encode_thread_mib_s"] = one[name]
    ref = row["reference"]
    row["reference_encode_mib_s"], row["reference_encode_cpu_mib_s"] = rate.get(ref, (None, None))
    row["speedup"] = _ratio(rate[name][0], rate.get(ref, (None,))[0])
    row["speedup_cpu"] = _ratio(rate[name][1], rate.get(ref, (None, None))[1])
    row["vs_ggml_cpu"] = _ratio(one[name], one.get(row["ggml"]))
    row["vs_minmax"] = row["vs_minmax_cpu"] = None
    if name in GGML:
        return
    scheme = AffineCodec(name).scheme
    base = scheme.replace(calibration="minmax").name
    if scheme.calibration.token != "minmax" and base in rate:
        row["vs_minmax"] = _ratio(rate[name][0], rate[base][0])
        row["vs_minmax_cpu"] = _ratio(one[name], one[base])


def _ratio(a: float | None, b: float | None) -> float | None:
    return None if a is None or not b else a / b


def _rates(x: np.ndarray, wall: float, cpu: float) -> dict[str, float | None]:
    """MiB/s of `x` encoded per second of wall time and of CPU time (None: too short)."""
    return {
        "ours_encode_mib_s": x.nbytes / MIB / wall,
        "ours_encode_cpu_mib_s": x.nbytes / MIB / cpu if cpu > 0 else None,
    }


def _fmt(v: float | None, spec: str) -> str:
    return "-" if v is None else format(v, spec)


def human(report: dict[str, Any]) -> str:
    body = [
        [
            r["codec"],
            _fmt(r["ours_encode_mib_s"], ".0f"),
            _fmt(r["ours_encode_cpu_mib_s"], ".0f"),
            _fmt(r["ours_encode_thread_mib_s"], ".0f"),
            _fmt(r["ours_rmse"], ".3e"),
            _fmt(r["vs_minmax_cpu"], ".2f"),
            f"{_fmt(r['vs_ggml_cpu'], '.2f')} {r['ggml']}" if r["ggml"] else "-",
            r["reference"] or "-",
            _fmt(r["reference_encode_mib_s"], ".0f"),
            _fmt(r["reference_encode_cpu_mib_s"], ".0f"),
            _fmt(r["reference_rmse"], ".3e"),
            _fmt(r["speedup_cpu"], ".1f"),
        ]
        for r in report["results"]
    ]
    head = ["codec", "enc MiB/s", "CPU MiB/s", "1-thread MiB/s", "RMSE", "x minmax", "x ggml",
            "onnxruntime", "enc MiB/s", "CPU MiB/s", "RMSE", "CPU x"]  # fmt: skip
    inp = report["input"]
    load = ", ".join(f"{v:.2f}" for v in report["load_average"])
    title = (
        f"{inp['rows']}x{inp['cols']} float32 (std {inp['std']}, seed {inp['seed']}), "
        "MiB/s of float32 encoded per second of wall time and of CPU time (all threads), "
        "bundler's codecs encoding into the arrays of an earlier encoding, "
        f"medians of {report['repeat']} interleaved rounds; load average {load}; 1-thread = "
        "per second of one thread's CPU time, numba on one thread; x minmax / x ggml = "
        "1-thread speed against the same scheme's MinMax / the GGML codec; CPU x = CPU speed "
        "against onnxruntime"
    )
    return title + "\n" + table(body, head, "<>>>>>><>>>>")
