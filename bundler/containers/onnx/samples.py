"""Small generated models (built with onnx.helper, random weights from a seed) that cover
the weights quantization rewrites: a CNN (Conv, Gemm) and a transformer block (MatMul,
attention, LayerNormalization). Used by the tests and by `bundler bench onnx`."""

from __future__ import annotations

from typing import Any

import numpy as np

from bundler.containers.onnx import deps

#: Default-domain opset of the generated models (LayerNormalization needs 17).
OPSET = 17
IR_VERSION = 8


def _init(name: str, array: np.ndarray) -> Any:
    from onnx import numpy_helper

    return numpy_helper.from_array(np.ascontiguousarray(array, np.float32), name)


def small_cnn(
    seed: int = 0, channels: tuple[int, int] = (16, 32), classes: int = 10, size: int = 32
) -> Any:
    """Conv-Relu-Conv-Relu-GlobalAveragePool-Flatten-Gemm over [N, 3, size, size] images;
    output `logits` [N, classes]."""
    onnx = deps.onnx()
    h = onnx.helper
    rng = np.random.default_rng(seed)
    c1, c2 = channels
    inits = [
        _init("conv1.weight", rng.standard_normal((c1, 3, 3, 3)) * np.sqrt(2 / 27)),
        _init("conv1.bias", rng.standard_normal(c1) * 0.1),
        _init("conv2.weight", rng.standard_normal((c2, c1, 3, 3)) * np.sqrt(2 / (9 * c1))),
        _init("conv2.bias", rng.standard_normal(c2) * 0.1),
        _init("fc.weight", rng.standard_normal((classes, c2)) * np.sqrt(1 / c2)),
        _init("fc.bias", rng.standard_normal(classes) * 0.1),
    ]
    nodes = [
        h.make_node("Conv", ["image", "conv1.weight", "conv1.bias"], ["c1"], pads=[1] * 4),
        h.make_node("Relu", ["c1"], ["r1"]),
        h.make_node("Conv", ["r1", "conv2.weight", "conv2.bias"], ["c2"], pads=[1] * 4),
        h.make_node("Relu", ["c2"], ["r2"]),
        h.make_node("GlobalAveragePool", ["r2"], ["pooled"]),
        h.make_node("Flatten", ["pooled"], ["flat"]),
        h.make_node("Gemm", ["flat", "fc.weight", "fc.bias"], ["logits"], transB=1),
    ]
    graph = h.make_graph(
        nodes,
        "small_cnn",
        [h.make_tensor_value_info("image", 1, ["batch", 3, size, size])],
        [h.make_tensor_value_info("logits", 1, ["batch", classes])],
        initializer=inits,
    )
    return _model(graph)


def transformer_block(
    seed: int = 0, d_model: int = 64, d_ff: int = 256, vocab: int = 100, heads: int = 4
) -> Any:
    """One pre-norm transformer block over [1, seq, d_model] (multi-head self-attention,
    ReLU feed-forward, residuals) and a MatMul head; output `logits` [1, seq, vocab]."""
    onnx = deps.onnx()
    h = onnx.helper
    rng = np.random.default_rng(seed)
    d, dh = d_model, d_model // heads

    def w(name: str, rows: int, cols: int) -> Any:
        return _init(name, rng.standard_normal((rows, cols)) / np.sqrt(rows))

    inits = [
        w("attn.q.weight", d, d), w("attn.k.weight", d, d), w("attn.v.weight", d, d),
        w("attn.o.weight", d, d), w("ffn.up.weight", d, d_ff), w("ffn.down.weight", d_ff, d),
        w("head.weight", d, vocab),
        _init("ln1.scale", 1 + 0.1 * rng.standard_normal(d)), _init("ln1.bias", np.zeros(d)),
        _init("ln2.scale", 1 + 0.1 * rng.standard_normal(d)), _init("ln2.bias", np.zeros(d)),
        _init("ffn.up.bias", 0.1 * rng.standard_normal(d_ff)),
        _init("attn.scale", np.array(1 / np.sqrt(dh))),
    ]  # fmt: skip
    from onnx import numpy_helper

    inits += [
        numpy_helper.from_array(np.array([1, -1, heads, dh], np.int64), "split_heads"),
        numpy_helper.from_array(np.array([1, -1, d], np.int64), "merge_heads"),
    ]

    def heads_of(src: str, dst: str) -> list[Any]:
        return [
            h.make_node("Reshape", [src, "split_heads"], [dst + "_r"]),
            h.make_node("Transpose", [dst + "_r"], [dst], perm=[0, 2, 1, 3]),
        ]

    nodes = [
        h.make_node("LayerNormalization", ["x", "ln1.scale", "ln1.bias"], ["n1"], axis=-1),
        h.make_node("MatMul", ["n1", "attn.q.weight"], ["q"]),
        h.make_node("MatMul", ["n1", "attn.k.weight"], ["k"]),
        h.make_node("MatMul", ["n1", "attn.v.weight"], ["v"]),
        *heads_of("q", "qh"), *heads_of("k", "kh"), *heads_of("v", "vh"),
        h.make_node("Transpose", ["kh"], ["kt"], perm=[0, 1, 3, 2]),
        h.make_node("MatMul", ["qh", "kt"], ["scores_raw"]),
        h.make_node("Mul", ["scores_raw", "attn.scale"], ["scores"]),
        h.make_node("Softmax", ["scores"], ["probs"], axis=-1),
        h.make_node("MatMul", ["probs", "vh"], ["ctx_h"]),
        h.make_node("Transpose", ["ctx_h"], ["ctx_t"], perm=[0, 2, 1, 3]),
        h.make_node("Reshape", ["ctx_t", "merge_heads"], ["ctx"]),
        h.make_node("MatMul", ["ctx", "attn.o.weight"], ["attn_out"]),
        h.make_node("Add", ["x", "attn_out"], ["h1"]),
        h.make_node("LayerNormalization", ["h1", "ln2.scale", "ln2.bias"], ["n2"], axis=-1),
        h.make_node("MatMul", ["n2", "ffn.up.weight"], ["up"]),
        h.make_node("Add", ["up", "ffn.up.bias"], ["up_b"]),
        h.make_node("Relu", ["up_b"], ["act"]),
        h.make_node("MatMul", ["act", "ffn.down.weight"], ["down"]),
        h.make_node("Add", ["h1", "down"], ["h2"]),
        h.make_node("MatMul", ["h2", "head.weight"], ["logits"]),
    ]  # fmt: skip
    graph = h.make_graph(
        nodes,
        "transformer_block",
        [h.make_tensor_value_info("x", 1, [1, "seq", d])],
        [h.make_tensor_value_info("logits", 1, [1, "seq", vocab])],
        initializer=inits,
    )
    return _model(graph)


def _model(graph: Any) -> Any:
    onnx = deps.onnx()
    model = onnx.helper.make_model(
        graph, opset_imports=[onnx.helper.make_opsetid("", OPSET)], producer_name="bundler-samples"
    )
    model.ir_version = IR_VERSION
    onnx.checker.check_model(model)
    return model
