"""An ONNX graph of a llama-architecture GGUF model (built with `onnx.helper` from the GGUF's
weights), for running a real language model in ONNX Runtime in the tests: `input_ids`
(int64, batch x tokens) in, `logits` (float32, batch x tokens x vocabulary) out, as
exporters of causal language models without a key-value cache lay them out.

The arithmetic is llama.cpp's for `llama`: RMS norms, rotary embeddings on adjacent pairs
(llama.cpp's "normal" rope, for which the GGUF converters permute the query and key
weights), grouped-query attention with a causal mask, a SwiGLU feed-forward and, when the
model has no `output.weight`, the token embedding as the output projection.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

import bundler

OPSET = 17


class _Graph:
    def __init__(self) -> None:
        self.nodes: list[onnx.NodeProto] = []
        self.inits: list[onnx.TensorProto] = []
        self.count = 0

    def const(self, name: str, value: np.ndarray) -> str:
        self.inits.append(numpy_helper.from_array(np.array(value, order="C"), name))
        return name

    def op(self, kind: str, *inputs: str, **attrs) -> str:
        self.count += 1
        out = f"t{self.count}_{kind}"
        self.nodes.append(helper.make_node(kind, list(inputs), [out], **attrs))
        return out


def _rms_norm(g: _Graph, x: str, weight: str, eps: str) -> str:
    mean = g.op("ReduceMean", g.op("Mul", x, x), axes=[-1], keepdims=1)
    inv = g.op("Reciprocal", g.op("Sqrt", g.op("Add", mean, eps)))
    return g.op("Mul", g.op("Mul", x, inv), weight)


def _rope(g: _Graph, x: str, heads: int, head_dim: int, cos: str, sin: str, shapes) -> str:
    """x: [B, T, heads * head_dim] -> [B, heads, T, head_dim], adjacent pairs rotated."""
    pairs = g.op("Reshape", x, shapes(0, 0, heads, head_dim // 2, 2))
    x0 = g.op("Gather", pairs, g.const(f"i0_{g.count}", np.array(0, np.int64)), axis=-1)
    x1 = g.op("Gather", pairs, g.const(f"i1_{g.count}", np.array(1, np.int64)), axis=-1)
    r0 = g.op("Sub", g.op("Mul", x0, cos), g.op("Mul", x1, sin))
    r1 = g.op("Add", g.op("Mul", x0, sin), g.op("Mul", x1, cos))
    axis = g.const(f"last_{g.count}", np.array([-1], np.int64))
    both = g.op("Concat", g.op("Unsqueeze", r0, axis), g.op("Unsqueeze", r1, axis), axis=-1)
    flat = g.op("Reshape", both, shapes(0, 0, heads, head_dim))
    return g.op("Transpose", flat, perm=[0, 2, 1, 3])


def build(gguf_path: str | Path, onnx_path: str | Path) -> Path:
    """Write the ONNX graph of the llama GGUF model at `gguf_path` (float weights)."""
    model = bundler.open(gguf_path)
    md = model.metadata
    n_layer = int(md["llama.block_count"])
    n_head = int(md["llama.attention.head_count"])
    n_kv = int(md["llama.attention.head_count_kv"])
    n_embd = int(md["llama.embedding_length"])
    head_dim = n_embd // n_head
    base = float(md["llama.rope.freq_base"])
    w = {n: t.numpy().astype(np.float32) for n, t in model.tensors.items()}
    g = _Graph()
    shape_no = iter(range(1_000_000))

    def shapes(*dims: int) -> str:
        return g.const(f"c_shape_{next(shape_no)}", np.array(dims, np.int64))

    eps = g.const("eps", np.array(md["llama.attention.layer_norm_rms_epsilon"], np.float32))
    embd = g.const("token_embd.weight", w["token_embd.weight"])
    h = g.op("Gather", embd, "input_ids", axis=0)
    # rotary angles: position * base^(-2i/head_dim), as [T, 1, head_dim/2]
    inv_freq = base ** (-np.arange(0, head_dim, 2, dtype=np.float64) / head_dim)
    ids_shape = g.op("Shape", "input_ids")
    length = g.op("Gather", ids_shape, g.const("one", np.array(1, np.int64)), axis=0)
    zero, step = g.const("zero", np.array(0, np.int64)), g.const("step", np.array(1, np.int64))
    positions = g.op("Cast", g.op("Range", zero, length, step), to=TensorProto.FLOAT)
    column = g.op("Unsqueeze", positions, g.const("col_axis", np.array([1], np.int64)))
    angles = g.op("MatMul", column, g.const("inv_freq", inv_freq[None, :].astype(np.float32)))
    angles = g.op("Unsqueeze", angles, g.const("head_axis", np.array([1], np.int64)))
    cos, sin = g.op("Cos", angles), g.op("Sin", angles)
    # causal mask [T, T]: -inf above the diagonal
    side = g.op("Unsqueeze", length, g.const("ax0", np.array([0], np.int64)))
    square = g.op("Concat", side, side, axis=0)
    fill = helper.make_tensor("neg_inf", TensorProto.FLOAT, [1], [-np.inf])
    mask = g.op("Trilu", g.op("ConstantOfShape", square, value=fill),
                g.const("k1", np.array(1, np.int64)), upper=1)  # fmt: skip
    scale = g.const("scale", np.array(1.0 / np.sqrt(head_dim), np.float32))
    for i in range(n_layer):
        p = f"blk.{i}."

        def proj(x: str, name: str) -> str:
            return g.op("MatMul", x, g.const(p + name, w[p + name].T))  # noqa: B023

        x = _rms_norm(g, h, g.const(p + "attn_norm.weight", w[p + "attn_norm.weight"]), eps)
        q = _rope(g, proj(x, "attn_q.weight"), n_head, head_dim, cos, sin, shapes)
        k = _rope(g, proj(x, "attn_k.weight"), n_kv, head_dim, cos, sin, shapes)
        v = g.op("Transpose", g.op("Reshape", proj(x, "attn_v.weight"),
                                   shapes(0, 0, n_kv, head_dim)), perm=[0, 2, 1, 3])  # fmt: skip
        rep = n_head // n_kv
        axis2 = g.const(f"axis2_{i}", np.array([2], np.int64))
        grouped = shapes(1, n_kv, rep, 1, 1)
        k = g.op("Reshape", g.op("Expand", g.op("Unsqueeze", k, axis2), grouped),
                 shapes(0, n_head, -1, head_dim))  # fmt: skip
        v = g.op("Reshape", g.op("Expand", g.op("Unsqueeze", v, axis2), grouped),
                 shapes(0, n_head, -1, head_dim))  # fmt: skip
        scores = g.op("Mul", g.op("MatMul", q, g.op("Transpose", k, perm=[0, 1, 3, 2])), scale)
        att = g.op("MatMul", g.op("Softmax", g.op("Add", scores, mask), axis=-1), v)
        att = g.op("Reshape", g.op("Transpose", att, perm=[0, 2, 1, 3]), shapes(0, 0, n_embd))
        h = g.op("Add", h, proj(att, "attn_output.weight"))
        x = _rms_norm(g, h, g.const(p + "ffn_norm.weight", w[p + "ffn_norm.weight"]), eps)
        gate = proj(x, "ffn_gate.weight")
        act = g.op("Mul", g.op("Mul", gate, g.op("Sigmoid", gate)), proj(x, "ffn_up.weight"))
        h = g.op("Add", h, proj(act, "ffn_down.weight"))
    h = _rms_norm(g, h, g.const("output_norm.weight", w["output_norm.weight"]), eps)
    if "output.weight" in w:
        out = g.op("MatMul", h, g.const("output.weight", w["output.weight"].T))
    else:  # tied: the token embedding, transposed by Gemm
        rows = g.op("Reshape", h, shapes(-1, n_embd))
        out = g.op("Gemm", rows, embd, transB=1)
        batch_tokens = g.op("Slice", ids_shape, g.const("s0", np.array([0], np.int64)),
                            g.const("s2", np.array([2], np.int64)))  # fmt: skip
        vocab = g.const("vocab", np.array([w["token_embd.weight"].shape[0]], np.int64))
        out = g.op("Reshape", out, g.op("Concat", batch_tokens, vocab, axis=0))
    g.nodes.append(helper.make_node("Identity", [out], ["logits"]))
    graph = helper.make_graph(
        g.nodes,
        "llama",
        [helper.make_tensor_value_info("input_ids", TensorProto.INT64, ["batch", "tokens"])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["batch", "tokens", None])],
        g.inits,
    )
    built = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)])
    built.ir_version = 8
    onnx.save(built, onnx_path)
    return Path(onnx_path)
