"""Weight-only quantization that keeps an ONNX model runnable: each chosen float weight
becomes integer codes plus scales (and zero points when asymmetric) feeding a
`DequantizeLinear` whose output keeps the weight's name, so its consumers are untouched;
or, for 4-bit MatMul weights on request, ONNX Runtime's `MatMulNBits` (com.microsoft) in
place of the MatMul.

Which weights: the weight inputs of MatMul, Gemm, Conv, ConvTranspose and the recurrent
LSTM/GRU/RNN (every use of the tensor must be such an input); never biases, norms, shape
constants, graph outputs or integer tensors. DequantizeLinear needs opset 10 per tensor,
13 per channel, 19 for float16 scales and 21 for int4/uint4 or blocks: the default-domain
opset is raised (with onnx's version converter) only when a chosen layout needs it.
"""

from __future__ import annotations

import math
import os
import re
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from bundler.containers.onnx import deps
from bundler.containers.onnx.graph import ModelIndex, Site, scopes, sites
from bundler.containers.onnx.quant import Quantized, Scheme, nbits_layout, quantize, threads_for
from bundler.containers.onnx.reader import (
    EXTERNAL,
    _external,
    files_size,
    load_model,
    load_model_in_place,
)
from bundler.containers.onnx.schema import FLOAT_TYPES
from bundler.containers.onnx.values import tensor_values
from bundler.containers.onnx.weights import WEIGHT_INPUTS, Use, trace
from bundler.containers.onnx.wire import LeftInFile
from bundler.errors import UsageError, naming

#: Quantized types: name -> (bits, signed).
TYPES = {"int8": (8, True), "uint8": (8, False), "int4": (4, True), "uint4": (4, False)}
#: --tensor-type values that leave a weight as it is.
KEEP = ("keep", "none", "float", "f32", "f16")
#: Block size of 4-bit weights when none is given.
DEFAULT_4BIT_BLOCK = 32
#: Ops that mean a model already holds quantized weights.
QUANTIZED_OPS = {
    "DequantizeLinear", "QuantizeLinear", "MatMulNBits", "MatMulInteger", "ConvInteger",
    "QLinearMatMul", "QLinearConv", "DynamicQuantizeLinear", "GatherBlockQuantized",
}  # fmt: skip
#: ONNX element types of the codes.
CODE_TYPES = {"int8": 3, "uint8": 2, "int4": 22, "uint4": 21}
MS_DOMAIN = "com.microsoft"


@dataclass
class Options:
    """What `quantize_model` does: the type, granularity, overrides and layout."""

    type: str = "int8"
    per_channel: bool = False
    block_size: int | None = None
    tensor_types: list[tuple[str, str]] = field(default_factory=list)
    matmul_nbits: bool = False
    allow_requantize: bool = False
    op_types: tuple[str, ...] | None = None


@dataclass
class Choice:
    """What happens to one float tensor of the model, and why."""

    name: str
    shape: tuple[int, ...]
    dtype: str
    action: str  # "quantize" or "keep"
    reason: str
    ops: list[str]
    scheme: Scheme | None = None
    axis: int | None = None
    layout: str | None = None  # "DequantizeLinear" or "MatMulNBits"
    bytes_before: int = 0
    bytes_after: int = 0
    site: Site | None = None
    uses: list[Use] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "shape": list(self.shape),
            "dtype": self.dtype,
            "action": self.action,
            "reason": self.reason,
            "ops": self.ops,
            "type": self.scheme.type_name if self.scheme else None,
            "granularity": self.scheme.granularity if self.scheme else None,
            "block_size": self.scheme.block_size if self.scheme else None,
            "axis": self.axis,
            "layout": self.layout,
            "bytes_before": self.bytes_before,
            "bytes_after": self.bytes_after,
        }

    @property
    def opset(self) -> int:
        """The default-domain opset this choice's DequantizeLinear needs (0: none)."""
        if self.action != "quantize" or self.layout != "DequantizeLinear":
            return 0
        s = self.scheme
        if s.bits == 4 or s.granularity == "block":
            return 21
        if self.dtype != "f32":
            return 19
        return 13 if s.granularity == "channel" else 10


def parse_type(text: str) -> tuple[int, bool] | None:
    """(bits, signed) of an ONNX quantization type name; None for a keep value."""
    key = text.lower()
    if key in KEEP:
        return None
    if key not in TYPES:
        raise UsageError(
            f"ONNX weight quantization takes {', '.join(TYPES)} (or keep), not {text!r}"
        )
    return TYPES[key]


def scheme_for(bits: int, signed: bool, options: Options) -> Scheme:
    if options.block_size:
        return Scheme(bits, signed, "block", options.block_size)
    if options.per_channel:
        return Scheme(bits, signed, "channel")
    if bits == 4:
        return Scheme(bits, signed, "block", DEFAULT_4BIT_BLOCK)
    return Scheme(bits, signed, "tensor")


def has_quantized(model: Any, index: ModelIndex | None = None) -> bool:
    """True when any graph of `model` (read as `index`, when given) already runs quantized
    weights."""
    if index is not None:
        return not index.op_types.isdisjoint(QUANTIZED_OPS)
    return any(n.op_type in QUANTIZED_OPS for s in scopes(model.graph) for n in s.graph.node)


def plan_model(model: Any, options: Options, index: ModelIndex | None = None) -> list[Choice]:
    """A choice for every float tensor of `model` (nothing is changed); `index`: the
    model's `ModelIndex`, when already made."""
    overrides = [(re.compile(rx), parse_type(t)) for rx, t in options.tensor_types]
    default = parse_type(options.type)
    index = ModelIndex(model) if index is None else index
    choices = []
    for site in index.sites:
        proto = site.proto()
        if proto is None or proto.data_type not in FLOAT_TYPES:
            continue
        choices.append(_choose(index, site, proto, default, overrides, options))
    return choices


def _choose(index, site, proto, default, overrides, options: Options) -> Choice:
    shape = tuple(int(d) for d in proto.dims)
    dtype = FLOAT_TYPES[proto.data_type]
    traced = trace(index, site.scope, site.value_name, len(shape))
    uses = [] if isinstance(traced, str) else traced
    ops = sorted({u.node.op_type for u in uses})
    nbytes = math.prod(shape) * {"f32": 4, "f16": 2, "bf16": 2, "f64": 8}[dtype]
    choice = Choice(site.name, shape, dtype, "keep", "", ops, bytes_before=nbytes, site=site)
    choice.bytes_after = nbytes
    choice.uses = uses
    wanted, why = default, "default type"
    for rx, t in overrides:
        if rx.search(site.name):
            wanted, why = t, f"--tensor-type {rx.pattern}"
            break
    reason = traced if isinstance(traced, str) else _not_selected(uses, shape, dtype, options)
    if reason or wanted is None:
        choice.reason = reason or f"kept by {why}"
        return choice
    bits, signed = wanted
    scheme = scheme_for(bits, signed, options)
    axes = {u.axes for u in uses}
    channel, reduce_axis = axes.pop() if len(axes) == 1 and None not in axes else (None, None)
    if scheme.granularity != "tensor" and channel is None:
        scheme, why = Scheme(bits, signed, "tensor"), why + "; per tensor (axes not traceable)"
    if scheme.granularity == "block" and shape[reduce_axis] < scheme.block_size:
        scheme = Scheme(bits, signed, "channel")
        why += f"; per channel (reduction axis {shape[reduce_axis]} < block)"
    axis = channel if scheme.granularity == "channel" else reduce_axis
    layout = "DequantizeLinear"
    if options.matmul_nbits:
        misfit = _nbits_misfit(site, uses, shape, scheme, dtype)
        layout = "DequantizeLinear" if misfit else "MatMulNBits"
        why += f"; not MatMulNBits, which needs {misfit}" if misfit else ""
    choice.action, choice.scheme, choice.axis, choice.layout = "quantize", scheme, axis, layout
    choice.reason = why
    choice.bytes_after = _quantized_bytes(shape, scheme, axis, dtype)
    return choice


def _not_selected(uses: list[Use], shape, dtype: str, options: Options) -> str:
    allowed = options.op_types or tuple(WEIGHT_INPUTS)
    for u in uses:
        if u.node.op_type not in allowed:
            return f"{u.node.op_type} weights not selected"
    if len(shape) < 2:
        return "fewer than 2 dimensions"
    if dtype in ("f64", "bf16"):
        return f"{dtype}: no ONNX Runtime CPU DequantizeLinear output of this type"
    return ""


def _nbits_misfit(site: Site, uses: list[Use], shape, scheme: Scheme, dtype: str) -> str:
    """What keeps a weight from ONNX Runtime's MatMulNBits ("" when it fits)."""
    size = scheme.block_size
    if scheme.bits != 4:
        return "4 bits"
    if scheme.granularity != "block" or size < 16 or size & (size - 1):
        return "blocks of a power of two >= 16 along the reduction axis"
    if len(shape) != 2 or dtype != "f32":
        return "a 2-D float32 weight"
    if not all(u.node.op_type == "MatMul" and u.node.input[1] == site.value_name for u in uses):
        return "the weight to be only the second input of MatMul nodes"
    return ""


def _quantized_bytes(shape, scheme: Scheme, axis: int, dtype: str) -> int:
    n = math.prod(shape)
    code_bytes = (n * scheme.bits + 7) // 8
    scale_bytes = 4 if dtype == "f32" else 2
    if scheme.granularity == "tensor":
        scales = 1
    elif scheme.granularity == "channel":
        scales = shape[axis]
    else:
        scales = n // shape[axis] * -(-shape[axis] // scheme.block_size)
    zero = 0 if scheme.signed else (scales * scheme.bits + 7) // 8
    return code_bytes + scales * scale_bytes + zero


# ------------------------------------------------------------------------ rewriting


def default_opset(model: Any) -> int:
    return max(o.version for o in model.opset_import if o.domain in ("", "ai.onnx"))


def raise_opset(model: Any, needed: int) -> Any:
    """`model` converted to default-domain opset `needed` (onnx's version converter)."""
    onnx = deps.onnx()
    from onnx import version_converter

    current = default_opset(model)
    try:
        converted = version_converter.convert_version(model, needed)
    except Exception as exc:  # the converter's own errors, for ops it has no adapter for
        raise UsageError(
            f"the chosen layout needs opset {needed}, and the model (opset {current}) cannot "
            f"be converted: {exc}; use int8 per tensor or per channel"
        ) from None
    minimum = onnx.helper.find_min_ir_version_for(list(converted.opset_import))
    converted.ir_version = max(converted.ir_version, minimum)
    return converted


class Names:
    """Fresh value names that collide with none of the model's (`taken`: every
    initializer, graph input, node output and node name of its graphs)."""

    def __init__(self, taken: set[str]):
        self.taken = taken

    def fresh(self, base: str) -> str:
        name, n = base, 1
        while name in self.taken:
            n += 1
            name = f"{base}_{n}"
        self.taken.add(name)
        return name


def weight_array(site: Site, in_file: LeftInFile | None = None) -> np.ndarray:
    """The values of a site's tensor (read in place when `in_file` holds them); a
    `FormatError` naming the tensor (not the file) when its data does not fit its type
    and dims."""
    proto = site.proto()
    found = None if in_file is None else in_file.array(proto)
    # data left in the file was checked against the type and dims
    return tensor_values(proto, site.name) if found is None else found


def code_tensor(name: str, q: np.ndarray, type_name: str) -> Any:
    """The TensorProto of integer codes (4-bit codes packed two a byte, low nibble first)."""
    onnx = deps.onnx()
    proto = onnx.TensorProto(name=name, dims=list(q.shape), data_type=CODE_TYPES[type_name])
    if type_name.endswith("4"):
        flat = (q.reshape(-1).view(np.uint8) & 0x0F).astype(np.uint8)
        if flat.size % 2:
            flat = np.append(flat, np.uint8(0))
        proto.raw_data = (flat[0::2] | (flat[1::2] << 4)).tobytes()
    else:
        proto.raw_data = q.tobytes()
    return proto


def _float_tensor(name: str, array: np.ndarray) -> Any:
    from onnx import numpy_helper

    return numpy_helper.from_array(np.asarray(array), name)


@dataclass
class _Edits:
    """Per-graph edits applied once all weights are done (indices stay valid meanwhile)."""

    drop: dict[int, set[str]] = field(default_factory=dict)
    front: dict[int, list[Any]] = field(default_factory=dict)
    graphs: dict[int, Any] = field(default_factory=dict)

    def finish(self) -> None:
        # removed and inserted in place: the other entries (and the subgraphs they hold)
        # are not copied
        for key, names in self.drop.items():
            graph = self.graphs[key]
            _delete(graph.initializer, names)
            _delete(graph.input, names)
        for key, nodes in self.front.items():
            graph = self.graphs[key]
            for i, node in enumerate(nodes):
                graph.node.insert(i, node)


def _delete(entries: Any, names: set[str]) -> None:
    """Remove the entries of a repeated field whose name is in `names`."""
    for i in reversed([i for i, e in enumerate(entries) if e.name in names]):
        del entries[i]


def apply(
    model: Any,
    choices: list[Choice],
    index: ModelIndex | None = None,
    in_file: LeftInFile | None = None,
) -> None:
    """Rewrite `model` in place for every "quantize" choice (sites from this model;
    `index`: the model's `ModelIndex`, when already made, stale afterwards; `in_file`:
    the weights its parse left in the file, put back into those kept)."""
    onnx = deps.onnx()
    names = Names((ModelIndex(model) if index is None else index).taken)
    edits = _Edits()
    for c in choices:
        if c.action != "quantize":
            continue
        x = weight_array(c.site, in_file)
        with threads_for(x):
            if c.layout == "MatMulNBits":
                _matmul_nbits(onnx, c, x, names, edits)
            else:
                _dequantize_linear(onnx, c, x, names, edits)
    edits.finish()
    if in_file is not None:
        in_file.restore(model)
    if any(c.layout == "MatMulNBits" and c.action == "quantize" for c in choices) and not any(
        o.domain == MS_DOMAIN for o in model.opset_import
    ):
        model.opset_import.append(onnx.helper.make_opsetid(MS_DOMAIN, 1))


def _remove_site(c: Choice, edits: _Edits, replacement: Any | None) -> None:
    graph = c.site.scope.graph
    key = id(graph)
    edits.graphs[key] = graph
    if c.site.kind == "initializer":
        edits.drop.setdefault(key, set()).add(c.site.value_name)
        if replacement is not None:
            edits.front.setdefault(key, []).append(replacement)
    elif replacement is not None:
        graph.node[c.site.index].CopyFrom(replacement)
    else:  # the Constant is no longer needed: an Identity of nothing would be wrong; drop
        graph.node[c.site.index].CopyFrom(_noop_constant(c))


def _noop_constant(c: Choice) -> Any:
    # A Constant node cannot be removed without shifting indices; it keeps producing the
    # original value under a fresh, unused name (removed by `prune_unused`).
    node = type(c.site.scope.graph.node[c.site.index])()
    node.CopyFrom(c.site.scope.graph.node[c.site.index])
    node.output[0] = node.output[0] + "__unused"
    return node


def _dequantize_linear(onnx: Any, c: Choice, x: np.ndarray, names: Names, edits: _Edits) -> None:
    s = c.scheme
    qz: Quantized = quantize(x, s, c.axis)
    value = c.site.value_name
    q_name = names.fresh(f"{value}_quantized")
    s_name = names.fresh(f"{value}_scale")
    inits = [code_tensor(q_name, qz.codes, s.type_name), _float_tensor(s_name, qz.scale)]
    inputs = [q_name, s_name]
    if qz.zero_point is not None:
        z_name = names.fresh(f"{value}_zero_point")
        inits.append(code_tensor(z_name, qz.zero_point, s.type_name))
        inputs.append(z_name)
    attrs: dict[str, int] = {}
    if s.granularity != "tensor":
        attrs["axis"] = int(c.axis)
    if s.granularity == "block":
        attrs["block_size"] = int(s.block_size)
    node = onnx.helper.make_node(
        "DequantizeLinear", inputs, [value], name=names.fresh(f"{value}_DequantizeLinear"), **attrs
    )
    c.site.scope.graph.initializer.extend(inits)
    _remove_site(c, edits, node)


def _matmul_nbits(onnx: Any, c: Choice, x: np.ndarray, names: Names, edits: _Edits) -> None:
    """MatMulNBits: B as uint8 [N, blocks, block_size / 2] (codes of W^T along K, low nibble
    first, unsigned; symmetric codes are offset by 8, the operator's default zero point),
    scales [N * blocks], zero points packed two a byte per row of N."""
    s = c.scheme
    k, n = x.shape
    packed, scales, zero = nbits_layout(x, s)
    value = c.site.value_name
    b_name = names.fresh(f"{value}_MatMulNBits_B")
    s_name = names.fresh(f"{value}_MatMulNBits_scales")
    inits = [
        _float_tensor(b_name, packed),
        _float_tensor(s_name, scales.reshape(-1)),
    ]
    inputs = [b_name, s_name]
    if not s.signed:
        z = zero.astype(np.uint8)  # [N, blocks]
        blocks = z.shape[1]
        if blocks % 2:
            z = np.concatenate([z, np.zeros((n, 1), np.uint8)], axis=1)
        z_name = names.fresh(f"{value}_MatMulNBits_zero_points")
        inits.append(_float_tensor(z_name, (z[:, 0::2] | (z[:, 1::2] << 4)).reshape(-1)))
        inputs.append(z_name)
    c.site.scope.graph.initializer.extend(inits)
    for use in c.uses:
        node = use.node
        replacement = onnx.helper.make_node(
            "MatMulNBits", [node.input[0], *inputs], list(node.output),
            name=node.name or names.fresh(f"{value}_MatMulNBits"), domain=MS_DOMAIN,
            K=k, N=n, bits=4, block_size=s.block_size,
        )  # fmt: skip
        node.CopyFrom(replacement)
    _remove_site(c, edits, None)


def prune_unused_constants(model: Any) -> None:
    """Drop the `__unused` Constant nodes left where a MatMulNBits weight was a Constant."""
    for scope in list(scopes(model.graph)):
        nodes = scope.graph.node
        unused = [
            i for i, n in enumerate(nodes)
            if n.op_type == "Constant" and n.output[0].endswith("__unused")
        ]  # fmt: skip
        for i in reversed(unused):
            del nodes[i]


# ------------------------------------------------------------------------ whole files


def load_for_rewrite(path: str, model: Any = None, found: list[Site] | None = None) -> Any:
    """The model at `path` (or `model`, its `load_model` parse, whose `sites` are `found`)
    with external-data tensors read in (checked ranges)."""
    from bundler.containers.onnx.writer import _set_raw

    model = load_model(path) if model is None else model
    for site in sites(model) if found is None else found:
        proto = site.proto()
        if proto is not None and proto.data_location == EXTERNAL:
            from bundler.codecs import get

            source = _external(path, site.name, proto, _proto_nbytes(proto), get("u8"))
            _set_raw(proto, source.raw().tobytes())
    return model


def _proto_nbytes(proto: Any) -> int:
    from bundler.containers.onnx.schema import ELEMENT_TYPES, WIDENED

    n = int(np.prod(list(proto.dims), dtype=np.int64))
    if proto.data_type in WIDENED:
        return (n + 1) // 2
    from bundler.codecs import get

    return get(ELEMENT_TYPES[proto.data_type][1]).facts.nbytes(tuple(proto.dims))


def refuse_requantize(model: Any, options: Options, index: ModelIndex | None = None) -> None:
    """A usage error for a model that already runs quantized weights, unless allowed."""
    if not options.allow_requantize and has_quantized(model, index):
        raise UsageError(
            "the model already holds quantized weights (DequantizeLinear / MatMulNBits / "
            "integer ops); quantizing it again loses accuracy: pass --allow-requantize "
            "(allow_requantize=True) to quantize its remaining float weights"
        )


def quantize_model(
    model: Any,
    options: Options,
    index: ModelIndex | None = None,
    in_file: LeftInFile | None = None,
) -> tuple[Any, list[Choice], dict[str, int]]:
    """(rewritten model, choices, opsets before/after); `model` itself may be changed
    (`index`: its `ModelIndex`, when already made, stale afterwards; `in_file`: the
    weights its parse left in the file)."""
    index = ModelIndex(model) if index is None else index
    choices = plan_model(model, options, index)
    chosen = [c for c in choices if c.action == "quantize"]
    before = default_opset(model)
    opsets = {"before": before, "after": before}
    refuse_requantize(model, options, index)
    needed = max((c.opset for c in chosen), default=0)
    if needed > before:
        if in_file is not None:  # the converter rewrites the whole model
            in_file.restore(model)
            in_file = None
        model = raise_opset(model, needed)
        index = ModelIndex(model)
        choices = plan_model(model, options, index)
        opsets["after"] = default_opset(model)
    apply(model, choices, index, in_file)
    if any(c.layout == "MatMulNBits" and c.site.kind == "constant" for c in chosen):
        prune_unused_constants(model)
    return model, choices, opsets


def quantize_file(
    src: str,
    dst: str,
    options: Options,
    *,
    force: bool = False,
    dry_run: bool = False,
) -> dict[str, Any]:
    """Quantize the ONNX model `src` into `dst`; the report as plain data."""
    from bundler.pipeline import _check_paths

    src, dst = os.fspath(src), os.fspath(dst)
    _check_paths(src, dst, force or dry_run)
    start = time.perf_counter()
    with naming(src):
        return _quantize_file(src, dst, options, force, dry_run, start)


def _quantize_file(
    src: str, dst: str, options: Options, force: bool, dry_run: bool, start: float
) -> dict[str, Any]:
    from bundler.containers.onnx.writer import EXTERNAL_LIMIT, save_model

    model, in_file = load_model_in_place(src)
    index = ModelIndex(model)
    source_bytes = files_size(src, model, index.sites)
    model = load_for_rewrite(src, model, index.sites)
    refuse_requantize(model, options, index)
    if dry_run:
        choices = plan_model(model, options, index)
        opsets = {"before": default_opset(model), "after": default_opset(model)}
        needed = max((c.opset for c in choices if c.action == "quantize"), default=0)
        opsets["after"] = max(opsets["before"], needed)
        outputs: list[str] = []
    else:
        model, choices, opsets = quantize_model(model, options, index, in_file)
        # quantizing cannot double a model: under half the limit, no size to measure
        small = source_bytes < EXTERNAL_LIMIT // 2
        outputs = save_model(model, dst, force=force, under_limit=small)
    seconds = time.perf_counter() - start
    chosen = [c for c in choices if c.action == "quantize"]
    return {
        "source": src,
        "output": dst,
        "written": not dry_run,
        "outputs": outputs,
        "seconds": seconds,
        "opset_before": opsets["before"],
        "opset_after": opsets["after"],
        "quantized": len(chosen),
        "kept": len(choices) - len(chosen),
        "weight_bytes_before": sum(c.bytes_before for c in choices),
        "weight_bytes_after": sum(c.bytes_after for c in choices),
        "source_bytes": source_bytes,
        "output_bytes": sum(os.path.getsize(p) for p in outputs),
        "tensors": [c.as_dict() for c in choices],
    }
