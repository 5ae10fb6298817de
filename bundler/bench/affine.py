"""`bundler bench codecs --affine`: the affine codecs beside ONNX Runtime's own weight
quantizers on the same matrix, in one run.

- int8 per channel: ONNX Runtime's per-channel weight quantization (what `quantize_dynamic
  (per_channel=True)` runs on a MatMul weight: `quant_utils.quantize_data` on each output
  channel, symmetric int8);
- int4 blocks: ONNX Runtime's MatMul 4-bit block quantizer (`MatMulNBitsQuantizer`'s
  `DefaultWeightOnlyQuantizer.qbits_block_quant`, C++), blocks along the input axis, with
  and without zero points;
- the calibration methods' speed against MinMax, and Q8_0 / Q4_0 encoding for scale.

Speeds are MiB of float32 per second of wall time and, steadier on a shared machine, per
second of CPU time (every thread of the process).

ONNX Runtime takes the MatMul weight as [in, out], so it gets the transposed matrix (not
timed); blocks and channels are the same slices. Errors are RMSE of decoded values.
"""

from __future__ import annotations

import argparse
import platform
from typing import Any

import numpy as np

from bundler.bench.codecs import SEED, _cpus, bench_input
from bundler.bench.measure import MIB, median_seconds, median_times, progress
from bundler.codecs import get
from bundler.codecs.affine import AffineCodec
from bundler.extras import require
from bundler.texttable import table

#: (our codec, ONNX Runtime's quantizer or None) measured side by side.
PAIRS = (
    ("int8:channel", "ort_int8_channel"),
    ("int4:g32:asym", "ort_4bit_block32_asym"),
    ("int4:g32", "ort_4bit_block32_sym"),
    ("int4:g128:asym", "ort_4bit_block128_asym"),
    ("int8:channel:mse", None),
    ("int8:channel:entropy", None),
    ("int8:channel:p99.9", None),
    ("int4:g128:asym:mse", None),
    ("int4:g128:asym:entropy", None),
    ("int4:g128:asym:p99.9", None),
)
GGML = ("q8_0", "q4_0")


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
        packed, scales, zero = out  # [N, blocks, block/2], [N, blocks], [N, ceil(blocks/2)]
        n, blocks, _ = packed.shape
        q = np.empty((n, blocks, block), np.float32)
        q[:, :, 0::2] = packed & 0xF
        q[:, :, 1::2] = packed >> 4
        z = np.empty((n, 2 * zero.shape[1]), np.float32)
        z[:, 0::2] = zero & 0xF
        z[:, 1::2] = zero >> 4
        z = z[:, :blocks] if not symmetric else np.full((n, blocks), 8, np.float32)
        return ((q - z[:, :, None]) * scales[:, :, None]).reshape(n, blocks * block)

    return run, decode


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
    repeat = args.repeat
    rows = []
    minmax_rate: dict[str, tuple[float, float]] = {}
    for ours, theirs in progress(PAIRS, "bench affine"):
        codec = AffineCodec(ours)
        encoded = codec.encode(x)
        wall, cpu = median_times(lambda c=codec: c.encode(x), repeat)
        row: dict[str, Any] = {
            "codec": codec.name,
            **_rates(x, wall, cpu),
            "ours_rmse": _rmse(codec.decode(encoded), x),
            "reference": theirs,
            "reference_encode_mib_s": None,
            "reference_rmse": None,
            "speedup": None,
            "vs_minmax": None,
            "vs_minmax_cpu": None,
        }
        base = codec.scheme.replace(calibration="minmax").name
        if codec.scheme.calibration.token == "minmax":
            minmax_rate[base] = (row["ours_encode_mib_s"], row["ours_encode_cpu_mib_s"])
        elif base in minmax_rate:
            row["vs_minmax"] = row["ours_encode_mib_s"] / minmax_rate[base][0]
            row["vs_minmax_cpu"] = row["ours_encode_cpu_mib_s"] / minmax_rate[base][1]
        if theirs is not None:
            go, decode = _ort(theirs, w_t)
            out = go()
            t = median_seconds(go, max(1, min(repeat, 3)))
            row["reference_encode_mib_s"] = x.nbytes / MIB / t
            row["reference_rmse"] = _rmse(decode(out), x)
            row["speedup"] = row["ours_encode_mib_s"] / row["reference_encode_mib_s"]
        rows.append(row)
    for name in GGML:
        codec = get(name)
        raw = codec.encode(x)
        wall, cpu = median_times(lambda c=codec, r=raw: c.encode(x, out=r), repeat)
        rows.append({
            "codec": name, **_rates(x, wall, cpu),
            "ours_rmse": _rmse(codec.decode(raw), x), "reference": None,
            "reference_encode_mib_s": None, "reference_rmse": None, "speedup": None,
            "vs_minmax": None, "vs_minmax_cpu": None,
        })  # fmt: skip
    return {
        "input": {"rows": args.rows, "cols": args.cols, "std": 0.02, "seed": SEED},
        "machine": {"cpus": _cpus(), "processor": platform.processor() or platform.machine()},
        "results": rows,
    }


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
            _fmt(r["ours_rmse"], ".3e"),
            _fmt(r["vs_minmax"], ".2f"),
            _fmt(r["vs_minmax_cpu"], ".2f"),
            r["reference"] or "-",
            _fmt(r["reference_encode_mib_s"], ".0f"),
            _fmt(r["reference_rmse"], ".3e"),
            _fmt(r["speedup"], ".1f"),
        ]
        for r in report["results"]
    ]
    head = ["codec", "enc MiB/s", "CPU MiB/s", "RMSE", "x minmax", "CPU x minmax", "onnxruntime",
            "enc MiB/s", "RMSE", "x"]  # fmt: skip
    inp = report["input"]
    title = (
        f"{inp['rows']}x{inp['cols']} float32 (std {inp['std']}, seed {inp['seed']}), "
        "MiB/s of float32 encoded per second of wall time and of CPU time (all threads), "
        "medians; x minmax = speed against the same scheme's MinMax"
    )
    return title + "\n" + table(body, head, "<>>>>><>>>")
