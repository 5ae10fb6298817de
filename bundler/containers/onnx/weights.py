"""Which float tensors of a graph are weights, and along which axes: a tensor is a weight
when every use of it, followed through ops that only move data (Slice, Split, Concat,
Identity, Unsqueeze, Squeeze, Transpose), is the weight input of MatMul, Gemm, Conv,
ConvTranspose or LSTM/GRU/RNN. Its output-channel and reduction axes are those of the
final consumer's weight, mapped back through the moves (None when a Reshape or Flatten
loses them)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from bundler.containers.onnx.graph import ModelIndex, Scope, constant_tensor
from bundler.containers.onnx.values import tensor_values

#: Consumer op -> input indices that are weights.
WEIGHT_INPUTS = {
    "MatMul": (1,),
    "Gemm": (1,),
    "Conv": (1,),
    "ConvTranspose": (1,),
    "LSTM": (1, 2),
    "GRU": (1, 2),
    "RNN": (1, 2),
}
#: Ops a weight may pass through on its way to its consumer (data input 0, Concat any).
MOVES = {"Slice", "Split", "Concat", "Identity", "Unsqueeze", "Squeeze", "Transpose"}
#: Moves that keep every axis where it is.
SAME_AXES = {"Slice", "Split", "Concat", "Identity"}


@dataclass
class Use:
    """A final consumer of a weight and the weight's (channel, reduction) axes in the
    original tensor's frame (None when they cannot be traced back)."""

    node: Any
    index: int
    scope: Scope
    axes: tuple[int, int] | None

    @property
    def direct(self) -> bool:
        return self.axes is not None


def _attr(node: Any, name: str, default: Any = None) -> Any:
    for a in node.attribute:
        if a.name == name:
            return list(a.ints) if a.ints else a.i
    return default


def consumer_axes(node: Any, ndim: int) -> tuple[int, int]:
    """(output-channel axis, reduction axis) of the weight input of `node` (rank `ndim`)."""
    op = node.op_type
    if op == "MatMul":
        return ndim - 1, ndim - 2
    if op == "Gemm":
        return (0, 1) if _attr(node, "transB", 0) else (1, 0)
    if op == "Conv":
        return 0, 1
    if op == "ConvTranspose":
        return 1, 0
    return 1, 2  # LSTM / GRU / RNN: [directions, gates * hidden, inputs]


def trace(index: ModelIndex, scope: Scope, value: str, ndim: int) -> list[Use] | str:
    """The final weight uses of `value`, or why it is not (only) a weight."""
    if index.is_output(scope, value):
        return "a graph output"
    uses: list[Use] = []
    reason = _follow(index, scope, value, list(range(ndim)), uses, 0)
    if reason:
        return reason
    if not uses:
        return "not used"
    return uses


def _follow(
    index: ModelIndex, scope: Scope, value: str, where: list[int | None], out: list[Use], depth: int
) -> str:
    """`where[i]` is the position of original axis i in `value` (None: squeezed away)."""
    if depth > 16:
        return "used through too many moves"
    for node, k, sc in index.consumers(scope, value):
        op = node.op_type
        if node.domain not in ("", "ai.onnx"):
            return f"used by {node.domain}.{op}"
        if k in WEIGHT_INPUTS.get(op, ()):
            rank = sum(w is not None for w in where)
            ch, red = consumer_axes(node, rank)
            axes = (where.index(ch), where.index(red)) if ch in where and red in where else None
            out.append(Use(node, k, sc, axes))
            continue
        if op not in MOVES or (k != 0 and op != "Concat"):
            return f"input {k} of {op} is not a weight input"
        moved = _moved(index, sc, node, where)
        if moved is None:
            return f"used through {op} with axes that cannot be traced"
        for o in node.output:
            if index.is_output(sc, o):
                return "reaches a graph output"
            reason = _follow(index, sc, o, moved, out, depth + 1)
            if reason:
                return reason
    return ""


def _moved(
    index: ModelIndex, scope: Scope, node: Any, where: list[int | None]
) -> list[int | None] | None:
    op = node.op_type
    if op in SAME_AXES:
        return where
    rank = sum(w is not None for w in where)
    if op == "Transpose":
        perm = _attr(node, "perm") or list(range(rank))[::-1]
        return [perm.index(w) if w is not None else None for w in where]
    axes = _attr(node, "axes")
    if axes is None and len(node.input) > 1 and node.input[1]:
        found = index.constant(scope, node.input[1])
        values = None if found is None else tensor_values(found, node.input[1])
        axes = None if values is None else [int(a) for a in values.reshape(-1)]
    if op == "Unsqueeze":
        if axes is None:
            return None
        out_rank = rank + len(axes)
        added = sorted(a % out_rank for a in axes)
        slots = [i for i in range(out_rank) if i not in added]
        return [slots[w] if w is not None else None for w in where]
    if axes is None:  # Squeeze of every 1-dimension: shape unknown here
        return None
    gone = sorted(a % rank for a in axes)
    return [None if w is None or w in gone else w - sum(g < w for g in gone) for w in where]


def constant_value(scope: Scope | None, name: str) -> np.ndarray | None:
    """The value of `name` when an initializer or Constant node of `scope` (or an
    enclosing scope) defines it."""
    while scope is not None:
        g = scope.graph
        for init in g.initializer:
            if init.name == name:
                return tensor_values(init, name)
        for node in g.node:
            if node.op_type == "Constant" and node.output and node.output[0] == name:
                t = constant_tensor(node)
                return tensor_values(t, name) if t is not None else None
        scope = scope.parent
    return None
