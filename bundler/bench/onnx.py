"""`bundler bench onnx`: bundler's ONNX weight quantization beside ONNX Runtime's own
quantizers, in the same run, on the same models:

- int8: bundler `--type int8 --per-channel` (weights only, DequantizeLinear) beside
  `onnxruntime.quantization.quantize_dynamic(per_channel=True, weight_type=QInt8)` (which
  also quantizes activations at run time: MatMulInteger / ConvInteger);
- 4-bit MatMul: bundler `--bits 4 --group-size 32 --matmul-nbits` restricted to MatMul
  weights beside ONNX Runtime's `MatMulNBitsQuantizer(block_size=32, is_symmetric=True)`.

Models: a generated transformer block and CNN (bundler.containers.onnx.samples), and
silero-vad's model when the package index can be reached. For every output model: the
time to quantize (load, rewrite and save: the quantizers of a model run in turn, one call
each per round, after a warm-up; medians of `repeat` rounds of wall time and of CPU time,
every thread of the process, the steadier figure on a shared machine: ONNX Runtime's 4-bit
quantizer runs on its own thread pool), output agreement with the original under ONNX
Runtime on 32 generated input sets (least cosine over the outputs, max error, top-1),
latency (median of 20 runs after 3 warm-ups) and file size.
"""

from __future__ import annotations

import logging
import os
import tempfile
import time
from collections.abc import Callable
from typing import Any

import numpy as np

#: What the issue asks: bundler's quantization this many times faster than ORT's (CPU time).
TARGET_SPEEDUP = 3.0
LATENCY_RUNS = 20
#: Generated input sets each agreement is measured on.
SAMPLES = 32


def _models(root: str) -> list[dict[str, Any]]:
    import onnx

    from bundler.containers.onnx import samples

    found = []
    for name, model, shapes in (
        ("transformer d512", samples.transformer_block(0, 512, 2048, 1000, 8), {"x": (1, 64, 512)}),
        ("cnn 64/128", samples.small_cnn(0, (64, 128), 100, 64), {"image": (1, 3, 64, 64)}),
    ):
        path = os.path.join(root, name.split()[0] + ".onnx")
        onnx.save(model, path)
        found.append({"name": name, "path": path, "shapes": shapes, "values": {}})
    try:
        from bundler import assets

        silero = assets.silero_vad_onnx()["silero_vad_16k_op15.onnx"]
        found.append({
            "name": "silero-vad 16k op15", "path": str(silero),
            "shapes": {"input": (1, 512)}, "values": {"sr": 16000.0},
        })  # fmt: skip
    except Exception as exc:  # no network: the generated models still run
        found.append({"name": "silero-vad", "skipped": str(exc)})
    return found


def _bundler(options) -> Callable[[str, str], None]:
    from bundler.containers.onnx.rewrite import quantize_file

    return lambda src, dst: quantize_file(src, dst, options, force=True)


def _ort_dynamic(src: str, dst: str) -> None:
    from onnxruntime.quantization import QuantType, quantize_dynamic

    quantize_dynamic(src, dst, per_channel=True, weight_type=QuantType.QInt8)


def _ort_4bit(src: str, dst: str) -> None:
    import onnx
    from onnxruntime.quantization.matmul_nbits_quantizer import MatMulNBitsQuantizer

    q = MatMulNBitsQuantizer(onnx.load(src), block_size=32, is_symmetric=True)
    q.process()
    q.model.save_model_to_file(dst, use_external_data_format=False)


def _timed(model: dict[str, Any], runs: dict[str, tuple[Callable, str]], repeat: int):
    """Wall and CPU medians of each quantizer that runs on `model` (interleaved rounds after
    a warm-up), and the error of each that fails."""
    from bundler.bench.measure import interleaved

    fns, errors = {}, {}
    for label, (fn, dst) in runs.items():
        try:
            fn(model["path"], dst)  # the warm-up; a peer that fails on a model is a result
        except Exception as exc:
            errors[label] = f"{type(exc).__name__}: {str(exc).splitlines()[0][:200]}"
            continue
        fns[label] = lambda f=fn, d=dst: f(model["path"], d)
    return interleaved(range(repeat), fns), errors


def _latency(path: str, feeds: dict[str, np.ndarray]) -> float:
    from bundler.containers.onnx.runtime import run, session

    sess = session(path)
    for _ in range(3):
        run(sess, path, feeds)
    times = []
    for _ in range(LATENCY_RUNS):
        t0 = time.perf_counter()
        run(sess, path, feeds)
        times.append(time.perf_counter() - t0)
    return float(np.median(times))


def _measure(model: dict[str, Any], label: str, dst: str, times, errors) -> dict[str, Any]:
    from bundler.containers.onnx.runtime import compare_runs, make_inputs, session

    row: dict[str, Any] = {"model": model["name"], "quantizer": label}
    if label in errors:
        return row | {"error": errors[label]}
    row["seconds"], row["cpu_seconds"] = times[label]
    try:
        runs = compare_runs(model["path"], dst, model["shapes"], SAMPLES, 0, model["values"])
    except Exception as exc:  # a peer quantizer whose output fails to run is a result too
        return row | {"error": f"{type(exc).__name__}: {str(exc).splitlines()[0][:200]}"}
    outs = runs["outputs"].values()
    row["cosine"] = min(o["cosine"] if o["cosine"] is not None else -1.0 for o in outs)
    row["max_abs_error"] = max(o["max_abs_error"] or 0.0 for o in outs)
    top1 = [o["top1"] for o in outs if o["top1"] is not None]
    row["top1"] = min(top1) if top1 else None
    feeds = make_inputs(session(model["path"]), model["shapes"], np.random.default_rng(0),
                        model["values"])  # fmt: skip
    row["latency_seconds"] = _latency(dst, feeds)
    row["file_bytes"] = os.path.getsize(dst)
    return row


def run(repeat: int = 3) -> dict[str, Any]:
    """Every model through the four quantizers; rows of plain data."""
    from bundler.containers.onnx import deps
    from bundler.containers.onnx.rewrite import Options
    from bundler.errors import UsageError

    deps.onnx(), deps.onnxruntime()
    if repeat < 1:
        raise UsageError(f"--repeat must be at least 1, got {repeat}")
    int8 = Options("int8", per_channel=True)
    four = Options("int4", block_size=32, matmul_nbits=True, op_types=("MatMul",))
    quantizers = (
        ("int8", "bundler int8 per-channel", _bundler(int8)),
        ("int8", "ORT quantize_dynamic int8 per-channel", _ort_dynamic),
        ("4bit", "bundler int4 g32 MatMulNBits", _bundler(four)),
        ("4bit", "ORT MatMulNBitsQuantizer g32", _ort_4bit),
    )
    logging.disable(logging.WARNING)  # ONNX Runtime's quantizers log advice and every node
    try:
        return _run(quantizers, four, repeat)
    finally:
        logging.disable(logging.NOTSET)


def _run(quantizers, four, repeat: int) -> dict[str, Any]:
    rows, skipped = [], []
    with tempfile.TemporaryDirectory(prefix="bundler-bench-onnx-") as root:
        for model in _models(root):
            if "skipped" in model:
                skipped.append(model)
                continue
            base = {"model": model["name"], "quantizer": "original (float)"}
            rows.append(base | {
                "file_bytes": os.path.getsize(model["path"]),
                "latency_seconds": _latency(model["path"], _feeds(model)),
            })  # fmt: skip
            matmuls = _has_matmul_weights(model["path"], four)
            # neither 4-bit quantizer has anything to do on a model without MatMul weights
            runs = {
                label: (fn, os.path.join(root, f"{k}_{os.path.basename(model['path'])}"))
                for k, (width, label, fn) in enumerate(quantizers)
                if width != "4bit" or matmuls
            }
            times, errors = _timed(model, runs, repeat)
            for width, label, _ in quantizers:
                if label in runs:
                    row = _measure(model, label, runs[label][1], times, errors)
                    rows.append(row | {"bits": width})
    return {
        "repeat": repeat, "rows": rows, "skipped": skipped, "speedups": _speedups(rows),
        "load_average": list(os.getloadavg()),
        "method": "interleaved rounds in one process after a warm-up, medians; CPU time of "
        "every thread",
    }  # fmt: skip


def _has_matmul_weights(path: str, options) -> bool:
    from bundler.containers.onnx.reader import load_model
    from bundler.containers.onnx.rewrite import plan_model

    return any(c.action == "quantize" for c in plan_model(load_model(path), options))


def _feeds(model: dict[str, Any]) -> dict[str, np.ndarray]:
    from bundler.containers.onnx.runtime import make_inputs, session

    sess = session(model["path"])
    return make_inputs(sess, model["shapes"], np.random.default_rng(0), model["values"])


def _speedups(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    out = []
    for model in dict.fromkeys(r["model"] for r in rows):
        for bits in ("int8", "4bit"):
            pair = [r for r in rows if r["model"] == model and r.get("bits") == bits]
            ours = next((r for r in pair if r["quantizer"].startswith("bundler")), None)
            peer = next((r for r in pair if r["quantizer"].startswith("ORT")), None)
            if ours and peer and "seconds" in ours and "seconds" in peer and "error" not in peer:
                out.append({
                    "model": model, "bits": bits, "speedup": peer["seconds"] / ours["seconds"],
                    "speedup_cpu": peer["cpu_seconds"] / ours["cpu_seconds"]
                    if ours["cpu_seconds"] > 0 else None,
                    "cosine_no_worse": ours["cosine"] >= peer["cosine"],
                    "target": TARGET_SPEEDUP,
                })  # fmt: skip
    return out
