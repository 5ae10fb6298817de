"""`validate ORIGINAL QUANTIZED` for ONNX models: structure (nodes, inputs, outputs),
weights (each original float weight beside its dequantized replacement: shapes, errors,
non-finite values), sizes, both models run in ONNX Runtime on generated inputs, and a
PASSED / FAILED verdict."""

from __future__ import annotations

import collections
from typing import Any

import numpy as np

from bundler.bundle import Bundle, Tensor
from bundler.codecs.affine.arithmetic import dequantize
from bundler.containers.onnx.details import OnnxDetails
from bundler.containers.onnx.graph import Scope, scopes, sites
from bundler.containers.onnx.quant import expand_blocks
from bundler.containers.onnx.reader import files_size, load_model
from bundler.containers.onnx.rewrite import load_for_rewrite
from bundler.containers.onnx.schema import FLOAT_TYPES
from bundler.containers.onnx.values import tensor_values
from bundler.containers.onnx.weights import constant_value
from bundler.errors import naming

#: Least cosine similarity of every output for a PASSED verdict (unless --threshold).
DEFAULT_THRESHOLD = 0.99


def structure(model: Any) -> dict[str, Any]:
    ops: collections.Counter[str] = collections.Counter()
    for scope in scopes(model.graph):
        ops.update(
            (f"{n.domain}." if n.domain not in ("", "ai.onnx") else "") + n.op_type
            for n in scope.graph.node
        )
    return {
        "nodes": sum(ops.values()),
        "graphs": sum(1 for _ in scopes(model.graph)),
        "inputs": [_value_info(v) for v in model.graph.input if v.name not in _inits(model)],
        "outputs": [_value_info(v) for v in model.graph.output],
        "ops": dict(sorted(ops.items())),
        "opsets": {o.domain or "ai.onnx": int(o.version) for o in model.opset_import},
    }


def _inits(model: Any) -> set[str]:
    return {i.name for i in model.graph.initializer}


def _value_info(v: Any) -> dict[str, Any]:
    t = v.type.tensor_type
    dims = [d.dim_value if d.HasField("dim_value") else (d.dim_param or "?") for d in t.shape.dim]
    return {"name": v.name, "elem_type": int(t.elem_type), "shape": dims}


def float_weights(model: Any) -> dict[str, np.ndarray]:
    """Every float tensor of `model` by bundle name."""
    found = {}
    for site in sites(model):
        proto = site.proto()
        if proto is not None and proto.data_type in FLOAT_TYPES:
            found[site.name] = tensor_values(proto, site.name)
    return found


def dequantized_weights(model: Any) -> dict[str, tuple[np.ndarray, str]]:
    """The weights a quantized model computes from constants: DequantizeLinear outputs and
    MatMulNBits weights (as [K, N]), by the name the original weight had, with a label."""
    return {name: (value, label) for name, value, label, _ in _computed_weights(model)}


def _computed_weights(model: Any) -> list[tuple[str, np.ndarray, str, list[str]]]:
    """Each weight computed from constants: its name, value, label and the constants it is
    computed from (the integer pieces a quantized model stores)."""
    found = []
    for scope in scopes(model.graph):
        for node in scope.graph.node:
            if node.op_type == "DequantizeLinear":
                value, name = _dequantize_linear(scope, node), node.output[0]
            elif node.op_type == "MatMulNBits":
                value, name = (
                    _matmul_nbits(scope, node),
                    node.input[1].removesuffix("_MatMulNBits_B"),
                )
            else:
                continue
            if value is not None:
                first = 0 if node.op_type == "DequantizeLinear" else 1
                pieces = [scope.prefix + i for i in node.input[first:] if i]
                found.append((scope.prefix + name, *value, pieces))
    return found


def dequantized_bundle(bundle: Bundle) -> Bundle:
    """The bundle with each weight the model computes from integer constants given as the
    float tensor it computes, under the original weight's name, instead of its pieces (what
    `diff` compares against the unquantized model)."""
    details = OnnxDetails.of(bundle)
    if details is None or details.model is None:
        return bundle
    with naming(details.model):
        computed = _computed_weights(load_for_rewrite(details.model))
    if not computed:
        return bundle
    pieces = {p for *_, used in computed for p in used}
    out = Bundle(bundle.metadata, format=bundle.format, path=bundle.path,
                 format_info=bundle.format_info)  # fmt: skip
    for name, tensor in bundle.tensors.items():
        if name not in pieces:
            out.add(tensor)
    for name, value, _, _ in computed:
        if name not in out.tensors:
            out.add(Tensor.from_array(name, value))
    return out


def _dequantize_linear(scope: Scope, node: Any) -> tuple[np.ndarray, str] | None:
    q = constant_value(scope, node.input[0])
    s = constant_value(scope, node.input[1])
    z = constant_value(scope, node.input[2]) if len(node.input) > 2 and node.input[2] else None
    if q is None or s is None:
        return None
    attrs = {a.name: a.i for a in node.attribute}
    axis, block = attrs.get("axis", 1), attrs.get("block_size", 0)
    q = np.asarray(q)
    if s.ndim == 0:
        shape_s, shape_z = s, z
        label = "per tensor"
    elif block:
        axis %= q.ndim
        shape_s = expand_blocks(s, axis, block, q.shape[axis])
        shape_z = expand_blocks(z, axis, block, q.shape[axis]) if z is not None else None
        label = f"blocks of {block} along axis {axis}"
    else:
        axis %= q.ndim
        shape = [1] * q.ndim
        shape[axis] = -1
        shape_s = s.reshape(shape)
        shape_z = z.reshape(shape) if z is not None else None
        label = f"per channel along axis {axis}"
    kind = str(q.dtype)
    out = dequantize(
        q.astype(np.int32), shape_s, shape_z.astype(np.int32) if shape_z is not None else None
    )
    return out.astype(s.dtype), f"{kind} {label}, DequantizeLinear"


def _matmul_nbits(scope: Scope, node: Any) -> tuple[np.ndarray, str] | None:
    attrs = {a.name: a.i for a in node.attribute}
    k, n, bits, block = (
        attrs.get("K"),
        attrs.get("N"),
        attrs.get("bits", 4),
        attrs.get("block_size"),
    )
    packed = constant_value(scope, node.input[1])
    scales = constant_value(scope, node.input[2])
    if packed is None or scales is None or bits != 4 or not k or not n or not block:
        return None
    blocks = -(-k // block)
    codes = np.empty((n, blocks, block), np.int32)
    codes[..., 0::2] = packed & 0x0F
    codes[..., 1::2] = packed >> 4
    if len(node.input) > 3 and node.input[3]:
        zp = constant_value(scope, node.input[3]).reshape(n, -1)
        z = np.empty((n, zp.shape[1] * 2), np.int32)
        z[:, 0::2] = zp & 0x0F
        z[:, 1::2] = zp >> 4
        z = z[:, :blocks]
    else:
        z = np.full((n, blocks), 8, np.int32)
    w = (codes - z[..., None]) * scales.reshape(n, blocks)[..., None].astype(np.float32)
    return w.reshape(n, blocks * block)[:, :k].T.copy(), "uint4 MatMulNBits"


def weight_rows(original: Any, quantized: Any, files: tuple[str, str]) -> list[dict[str, Any]]:
    """One row per original float weight: unchanged, dequantized (with errors), or gone
    (`files`: the models' paths, named by an error reading either's weights)."""
    first, second = files
    with naming(first):
        before = float_weights(original)
    with naming(second):
        after_float = float_weights(quantized)
        after_dq = dequantized_weights(quantized)
    rows = []
    for name, x in before.items():
        row: dict[str, Any] = {"name": name, "shape": list(x.shape), "dtype": str(x.dtype)}
        row["nonfinite_before"] = int(x.size - np.isfinite(x.astype(np.float32)).sum())
        if name in after_dq:
            y, how = after_dq[name]
            row["status"] = "quantized"
            row["how"] = how
        elif name in after_float:
            y, how = after_float[name], "unchanged"
            row["status"] = "same" if y.tobytes() == x.tobytes() else "changed"
            row["how"] = how
        else:
            rows.append(row | {"status": "missing", "how": None})
            continue
        row["nonfinite_after"] = int(y.size - np.isfinite(y.astype(np.float32)).sum())
        if y.shape != x.shape:
            rows.append(row | {"status": "shape changed", "shape_after": list(y.shape)})
            continue
        row |= _errors(x.astype(np.float64), y.astype(np.float64))
        rows.append(row)
    return rows


def _errors(x: np.ndarray, y: np.ndarray) -> dict[str, Any]:
    d = x - y
    rms = float(np.sqrt(np.mean(x * x))) if x.size else 0.0
    rmse = float(np.sqrt(np.mean(d * d))) if x.size else 0.0
    nx, ny = float(np.linalg.norm(x)), float(np.linalg.norm(y))
    cosine = float(x.reshape(-1) @ y.reshape(-1) / (nx * ny)) if nx and ny else float(nx == ny)
    return {
        "max_abs_error": float(np.abs(d).max()) if x.size else 0.0,
        "relative_rmse": rmse / rms if rms else rmse,
        "cosine": cosine,
    }


def validate_pair(
    original: str,
    quantized: str,
    *,
    threshold: float | None = None,
    shapes: dict[str, tuple[int, ...]] | None = None,
    samples: int = 4,
    seed: int = 0,
    values: dict[str, float] | None = None,
    run: bool = True,
) -> dict[str, Any]:
    """The full comparison report of two ONNX models (plain data; `passed` is the verdict)."""
    from bundler.containers.onnx.runtime import compare_runs

    threshold = DEFAULT_THRESHOLD if threshold is None else threshold
    a, b = load_for_rewrite(original), load_for_rewrite(quantized)
    sa, sb = structure(a), structure(b)
    rows = weight_rows(a, b, (original, quantized))
    size_a, size_b = (
        files_size(original, load_model(original)),
        files_size(quantized, load_model(quantized)),
    )
    failures = []
    if [(v["name"], v["elem_type"]) for v in sa["inputs"]] != [
        (v["name"], v["elem_type"]) for v in sb["inputs"]
    ]:
        failures.append("the models take different inputs")
    if [(v["name"], v["elem_type"]) for v in sa["outputs"]] != [
        (v["name"], v["elem_type"]) for v in sb["outputs"]
    ]:
        failures.append("the models give different outputs")
    for r in rows:
        if r["status"] in ("missing", "shape changed"):
            failures.append(f"weight {r['name']!r}: {r['status']}")
        elif r.get("nonfinite_after", 0) > r["nonfinite_before"]:
            failures.append(f"weight {r['name']!r}: {r['nonfinite_after']} non-finite values")
    runtime = None
    if run and not failures:
        runtime = compare_runs(original, quantized, shapes, samples, seed, values)
        for name, m in runtime["outputs"].items():
            if m["cosine"] is None or m["cosine"] < threshold:
                cos = "not finite" if m["cosine"] is None else f"{m['cosine']:.6f}"
                failures.append(f"output {name!r}: cosine {cos} < threshold {threshold}")
    quantized_rows = [r for r in rows if r["status"] == "quantized"]
    return {
        "original": original,
        "quantized": quantized,
        "threshold": threshold,
        "structure": {"original": sa, "quantized": sb},
        "weights": {
            "original_float": len(rows),
            "quantized": len(quantized_rows),
            "unchanged": sum(r["status"] == "same" for r in rows),
            "changed": sum(r["status"] == "changed" for r in rows),
            "missing": sum(r["status"] == "missing" for r in rows),
            "nonfinite": sum(r.get("nonfinite_after", 0) for r in rows),
            "worst_relative_rmse": max((r["relative_rmse"] for r in quantized_rows), default=0.0),
            "rows": rows,
        },
        "size": {
            "original_bytes": size_a,
            "quantized_bytes": size_b,
            "ratio": size_b / size_a if size_a else None,
        },
        "runtime": runtime,
        "failures": failures,
        "passed": not failures,
    }
