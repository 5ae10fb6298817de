"""Running ONNX models in ONNX Runtime (CPU): sessions with typed errors, generated inputs
that fit the declared shapes and types, and per-output agreement of two models."""

from __future__ import annotations

import math
import os
from typing import Any

import numpy as np

from bundler.containers.onnx import deps
from bundler.errors import UnsupportedFormatError, UsageError

#: Size given to a dynamic dimension that --input-shape does not set.
DEFAULT_DIM = 1
#: ONNX Runtime type strings -> numpy dtypes of generated inputs.
NUMPY_TYPES = {
    "tensor(float)": np.float32,
    "tensor(float16)": np.float16,
    "tensor(double)": np.float64,
    "tensor(int8)": np.int8,
    "tensor(uint8)": np.uint8,
    "tensor(int16)": np.int16,
    "tensor(uint16)": np.uint16,
    "tensor(int32)": np.int32,
    "tensor(uint32)": np.uint32,
    "tensor(int64)": np.int64,
    "tensor(uint64)": np.uint64,
    "tensor(bool)": np.bool_,
}


def session(path: str, threads: int | None = None) -> Any:
    """An ONNX Runtime CPU session of the model at `path`; a model ONNX Runtime refuses
    (an opset or operator it does not implement, a broken graph) is a typed error."""
    ort = deps.onnxruntime()
    options = ort.SessionOptions()
    options.log_severity_level = 4
    if threads:
        options.intra_op_num_threads = threads
    if not os.path.exists(path):
        from bundler.errors import FileNotFound

        raise FileNotFound(path)
    try:
        return ort.InferenceSession(path, options, providers=["CPUExecutionProvider"])
    except Exception as exc:  # onnxruntime's own exception types (Fail, InvalidGraph, ...)
        message = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise UnsupportedFormatError(path, None, f"ONNX Runtime cannot run it: {message}") from None


def input_specs(sess: Any) -> list[dict[str, Any]]:
    return [
        {
            "name": i.name,
            "type": i.type,
            "shape": [d if isinstance(d, int) else str(d) for d in i.shape],
        }
        for i in sess.get_inputs()
    ]


def make_inputs(
    sess: Any,
    shapes: dict[str, tuple[int, ...]],
    rng: np.random.Generator,
    values: dict[str, float] | None = None,
) -> dict[str, np.ndarray]:
    """One set of inputs for `sess`: floats from a standard normal, integers in 0..3,
    booleans at random; shapes from `shapes`, else the declared ones with dynamic
    dimensions DEFAULT_DIM."""
    values = values or {}
    names = {i.name for i in sess.get_inputs()}
    for flag, given in (("--input-shape", shapes), ("--input-value", values)):
        unknown = set(given) - names
        if unknown:
            raise UsageError(f"{flag} names no input of the model: {', '.join(sorted(unknown))}")
    feeds = {}
    for spec in sess.get_inputs():
        dtype = NUMPY_TYPES.get(spec.type)
        if dtype is None:
            raise UsageError(f"input {spec.name!r} has type {spec.type}; cannot generate it")
        shape = shapes.get(spec.name)
        if shape is None:
            shape = tuple(_dim(k, d) for k, d in enumerate(spec.shape or []))
        if spec.name in values:
            value = np.full(shape, values[spec.name], dtype)
        elif np.issubdtype(dtype, np.floating):
            value = rng.standard_normal(shape).astype(dtype)
        elif dtype is np.bool_:
            value = rng.integers(0, 2, shape).astype(bool)
        else:
            value = rng.integers(0, 4, shape).astype(dtype)
        feeds[spec.name] = value
    return feeds


def _dim(k: int, d: Any) -> int:
    return d if isinstance(d, int) and d > 0 else DEFAULT_DIM


def run(sess: Any, path: str, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
    try:
        return sess.run(None, feeds)
    except Exception as exc:  # onnxruntime's RuntimeException, InvalidArgument, ...
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        shapes = ", ".join(f"{k}={'x'.join(map(str, v.shape))}" for k, v in feeds.items())
        raise UsageError(
            f"{path}: running it on generated inputs ({shapes}) failed: {first}; give the "
            "input sizes with --input-shape NAME=1x3x224x224"
        ) from None


def agreement(a: np.ndarray, b: np.ndarray) -> dict[str, Any]:
    """Cosine similarity, max and mean absolute error, and (for float outputs whose last
    dimension has at least 2 entries: class scores) the share of rows with the same top-1."""
    result: dict[str, Any] = {"shape": list(a.shape), "same_shape": a.shape == b.shape}
    if a.shape != b.shape:
        return result | {
            "cosine": None,
            "max_abs_error": None,
            "mean_abs_error": None,
            "top1": None,
        }
    x = a.astype(np.float64).reshape(-1)
    y = b.astype(np.float64).reshape(-1)
    finite = bool(np.isfinite(x).all() and np.isfinite(y).all())
    nx, ny = math.sqrt(float(x @ x)), math.sqrt(float(y @ y))
    if not finite:
        cosine = None
    elif nx == 0 or ny == 0:
        cosine = 1.0 if nx == ny else 0.0
    else:
        cosine = float(x @ y / (nx * ny))
    diff = np.abs(x - y) if x.size else np.zeros(1)
    top1 = None
    if np.issubdtype(a.dtype, np.floating) and a.ndim >= 1 and a.shape[-1] >= 2:
        top1 = float(np.mean(a.argmax(axis=-1) == b.argmax(axis=-1)))
    return result | {
        "cosine": cosine,
        "max_abs_error": float(diff.max()),
        "mean_abs_error": float(diff.mean()),
        "top1": top1,
        "finite": finite,
    }


def compare_runs(
    original: str,
    quantized: str,
    shapes: dict[str, tuple[int, ...]] | None = None,
    samples: int = 4,
    seed: int = 0,
    values: dict[str, float] | None = None,
) -> dict[str, Any]:
    """Run both models on the same `samples` generated input sets; per-output agreement
    (outputs concatenated over the samples)."""
    a_sess, b_sess = session(original), session(quantized)
    a_in = {(i.name, i.type) for i in a_sess.get_inputs()}
    b_in = {(i.name, i.type) for i in b_sess.get_inputs()}
    if a_in != b_in:
        raise UsageError("the two models take different inputs; cannot run them side by side")
    names = [o.name for o in a_sess.get_outputs()]
    if names != [o.name for o in b_sess.get_outputs()]:
        raise UsageError("the two models give different outputs; cannot compare them")
    rng = np.random.default_rng(seed)
    a_out: list[list[np.ndarray]] = [[] for _ in names]
    b_out: list[list[np.ndarray]] = [[] for _ in names]
    feeds = {}
    for _ in range(samples):
        feeds = make_inputs(a_sess, shapes or {}, rng, values)
        for k, (x, y) in enumerate(
            zip(run(a_sess, original, feeds), run(b_sess, quantized, feeds), strict=True)
        ):
            a_out[k].append(np.asarray(x))
            b_out[k].append(np.asarray(y))
    outputs = {}
    for k, name in enumerate(names):
        a = np.stack(a_out[k])
        b = (
            np.stack(b_out[k])
            if all(x.shape == y.shape for x, y in zip(a_out[k], b_out[k], strict=True))
            else b_out[k][0]
        )
        outputs[name] = agreement(a, b)
    return {
        "samples": samples,
        "seed": seed,
        "inputs": {k: list(v.shape) for k, v in feeds.items()},
        "outputs": outputs,
    }
