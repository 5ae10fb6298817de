"""Codes equal ONNX QuantizeLinear (onnx.reference and onnxruntime) on the same inputs and
parameters, and decoding equals DequantizeLinear, per tensor, per axis and blocked."""

from __future__ import annotations

import numpy as np
import onnx  # a test dependency: its absence is a failure, not a skip
import pytest
from onnx import TensorProto, helper
from onnx.reference import ReferenceEvaluator

from bundler.codecs.affine import AffineCodec

RNG = np.random.default_rng(21)
X = (RNG.standard_normal((16, 128)) * np.geomspace(0.001, 10, 16)[:, None]).astype(np.float32)

_ELEM = {
    (8, True): TensorProto.INT8,
    (8, False): TensorProto.UINT8,
    (4, True): TensorProto.INT4,
    (4, False): TensorProto.UINT4,
    (16, True): TensorProto.INT16,
    (16, False): TensorProto.UINT16,
}


def _model(codec: AffineCodec, enc, quantize: bool) -> onnx.ModelProto:
    s = codec.scheme
    elem = _ELEM[(s.bits, s.symmetric)]
    zero = np.zeros(enc.scale.shape, np.int64) if enc.zero_point is None else enc.zero_point
    attrs: dict = {}
    scale = enc.scale.astype(np.float32)
    if s.granularity == "tensor":
        scale, zero = scale.reshape(()), zero.reshape(())
    elif s.granularity == "channel":
        scale, zero = scale.reshape(-1), zero.reshape(-1)
        attrs["axis"] = 0
    else:
        attrs.update(axis=1, block_size=s.group_size)
    inits = [
        helper.make_tensor("scale", TensorProto.FLOAT, scale.shape, scale.reshape(-1).tolist()),
        helper.make_tensor("zero", elem, zero.shape, zero.reshape(-1).astype(int).tolist()),
    ]
    if quantize:
        nodes = [
            helper.make_node("QuantizeLinear", ["x", "scale", "zero"], ["q"], **attrs),
            helper.make_node("Cast", ["q"], ["y"], to=TensorProto.INT32),
        ]
        x_in = helper.make_tensor_value_info("x", TensorProto.FLOAT, X.shape)
        y_out = helper.make_tensor_value_info("y", TensorProto.INT32, X.shape)
    else:
        nodes = [
            helper.make_node("Cast", ["x"], ["c"], to=elem),
            helper.make_node("DequantizeLinear", ["c", "scale", "zero"], ["y"], **attrs),
        ]
        x_in = helper.make_tensor_value_info("x", TensorProto.INT32, X.shape)
        y_out = helper.make_tensor_value_info("y", TensorProto.FLOAT, X.shape)
    graph = helper.make_graph(nodes, "q", [x_in], [y_out], initializer=inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 21)])
    model.ir_version = 10
    return model


def _run(model, x, runtime):
    if runtime == "reference":
        return ReferenceEvaluator(model).run(None, {"x": x})[0]
    import onnxruntime as ort

    sess = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return sess.run(None, {"x": x})[0]


def _float32_ties(x: np.ndarray, enc, codec) -> np.ndarray:
    """Where ONNX's float32 quotient x / scale lands on k + 0.5 exactly while the exact
    quotient does not (bundler divides in float64): the only places the two may differ."""
    from bundler.codecs.affine.codec import _Layout

    layout = _Layout(codec.scheme, x.shape)
    p, s, q = layout.view3
    scale = np.broadcast_to(
        enc.scale.astype(np.float32).reshape(-1, s)[:, :, None], (p, s, q)
    ).reshape(x.shape)
    q32 = x / scale
    q64 = x.astype(np.float64) / scale.astype(np.float64)
    return (q32 - np.floor(q32) == 0.5) & (q64 - np.floor(q64) != 0.5)


SPECS = [
    f"int{b}:{g}:{s}"
    for b in (4, 8, 16)
    for g in ("tensor", "channel", "g32")
    for s in ("sym", "asym")
]


@pytest.mark.parametrize("runtime", ["reference", "onnxruntime"])
@pytest.mark.parametrize("spec", SPECS)
def test_codes_equal_quantize_linear(spec, runtime):
    codec = AffineCodec(spec)
    enc = codec.encode(X)
    got = _run(_model(codec, enc, quantize=True), X, runtime)
    ties = _float32_ties(X, enc, codec)
    ours = enc.codes.astype(np.int64)
    np.testing.assert_array_equal(ours[~ties], got.astype(np.int64)[~ties])
    assert np.all(np.abs(ours[ties] - got[ties]) <= 1)


@pytest.mark.parametrize("runtime", ["reference", "onnxruntime"])
@pytest.mark.parametrize("spec", [s for s in SPECS if not s.startswith("int16")])
def test_decoding_equals_dequantize_linear(spec, runtime):
    codec = AffineCodec(spec)
    enc = codec.encode(X)
    got = _run(_model(codec, enc, quantize=False), enc.codes.astype(np.int32), runtime)
    np.testing.assert_array_equal(codec.decode(enc), got)
