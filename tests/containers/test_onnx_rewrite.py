"""Weight-only ONNX quantization: which weights, codes equal to ONNX's QuantizeLinear,
outputs ONNX Runtime runs, the opset raised only when needed, nothing-to-do rewrites
protobuf-equal, requantizing refused without the flag."""

from __future__ import annotations

import json

import ml_dtypes
import numpy as np
import onnx
import onnxruntime as ort
import pytest
from conftest import run_cli
from onnx import helper
from onnx.reference import ReferenceEvaluator

from bundler.containers.onnx import samples
from bundler.containers.onnx.quant import Scheme, quantize
from bundler.containers.onnx.rewrite import Options, plan_model

BUILDERS = {"cnn": samples.small_cnn, "transformer": samples.transformer_block}
FEEDS = {
    "cnn": {"image": np.random.default_rng(1).standard_normal((2, 3, 32, 32), np.float32)},
    "transformer": {"x": np.random.default_rng(1).standard_normal((1, 8, 64), np.float32)},
}


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    root = tmp_path_factory.mktemp("rewrite")
    paths = {}
    for name, build in BUILDERS.items():
        paths[name] = root / f"{name}.onnx"
        onnx.save(build(seed=5), paths[name])
    return paths


@pytest.mark.parametrize(
    ("name", "quantized"),
    [
        ("cnn", ["conv1.weight", "conv2.weight", "fc.weight"]),
        ("transformer", ["attn.q.weight", "attn.k.weight", "attn.v.weight", "attn.o.weight",
                         "ffn.up.weight", "ffn.down.weight", "head.weight"]),
    ],
)  # fmt: skip
def test_only_matmul_gemm_conv_weights_are_chosen(name, quantized):
    choices = plan_model(BUILDERS[name](), Options("int8"))
    assert [c.name for c in choices if c.action == "quantize"] == quantized
    kept = {c.name: c.reason for c in choices if c.action == "keep"}
    assert all("bias" in n or "ln" in n or n == "attn.scale" for n in kept), kept
    assert "split_heads" not in kept  # integer shape constants are not even candidates


ZERO_TYPES = {
    onnx.TensorProto.INT8: np.int8,
    onnx.TensorProto.UINT8: np.uint8,
    onnx.TensorProto.INT4: ml_dtypes.int4,
    onnx.TensorProto.UINT4: ml_dtypes.uint4,
}


def _reference_codes(x, scale, zero, axis, block, elem):
    """QuantizeLinear as onnx.reference runs it (opset 21); the zero point's type gives
    the codes' type."""
    attrs = {"axis": axis} if axis is not None else {}
    if block:
        attrs["block_size"] = block
    node = helper.make_node("QuantizeLinear", ["x", "s", "z"], ["q"], **attrs)
    zero = np.zeros(np.shape(scale), np.int64) if zero is None else zero
    feeds = {"x": x, "s": np.asarray(scale), "z": np.asarray(zero).astype(ZERO_TYPES[elem])}
    return ReferenceEvaluator(node).run(None, feeds)[0]


@pytest.mark.parametrize(
    ("scheme", "axis", "elem"),
    [
        (Scheme(8, True, "tensor"), None, onnx.TensorProto.INT8),
        (Scheme(8, True, "channel"), 1, onnx.TensorProto.INT8),
        (Scheme(8, False, "channel"), 0, onnx.TensorProto.UINT8),
        (Scheme(4, True, "block", 16), 0, onnx.TensorProto.INT4),
        (Scheme(4, False, "block", 32), 0, onnx.TensorProto.UINT4),
        (Scheme(8, False, "block", 16), 0, onnx.TensorProto.UINT8),
    ],
    ids=["int8_tensor", "int8_channel", "uint8_channel", "int4_block16", "uint4_block32",
         "uint8_block16"],
)  # fmt: skip
def test_codes_are_onnx_quantizelinear_codes(scheme, axis, elem):
    x = np.random.default_rng(7).standard_normal((72, 24)).astype(np.float32)
    x[3, 5] = 0.0
    q = quantize(x, scheme, axis)
    ref_axis = q.axis if scheme.granularity != "tensor" else None
    block = scheme.block_size if scheme.granularity == "block" else 0
    expected = _reference_codes(x, q.scale, q.zero_point, ref_axis, block, elem)
    assert np.array_equal(np.asarray(expected).astype(np.int16), q.codes.astype(np.int16))


OPTION_SETS = {
    "int8": ["--type", "int8"],
    "int8_channel": ["--type", "int8", "--per-channel"],
    "uint8_channel": ["--bits", "8", "--asym", "--per-channel"],
    "int4": ["--bits", "4"],
    "uint4_g16": ["--type", "uint4", "--group-size", "16"],
}


@pytest.mark.parametrize("name", list(BUILDERS))
@pytest.mark.parametrize("option", list(OPTION_SETS))
def test_quantized_models_run_in_onnx_runtime_with_the_same_interface(
    name, option, models, tmp_path
):
    out = tmp_path / "q.onnx"
    run_cli("quantize", str(models[name]), "-o", str(out), *OPTION_SETS[option], check=True)
    onnx.checker.check_model(onnx.load(out))
    a = ort.InferenceSession(str(models[name]), providers=["CPUExecutionProvider"])
    b = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"])
    assert [(i.name, i.type, i.shape) for i in a.get_inputs()] == [
        (i.name, i.type, i.shape) for i in b.get_inputs()
    ]
    x, y = a.run(None, FEEDS[name])[0], b.run(None, FEEDS[name])[0]
    cosine = float((x * y).sum() / np.linalg.norm(x) / np.linalg.norm(y))
    assert cosine > (0.999 if "8" in option else 0.97)
    assert out.stat().st_size < 0.45 * models[name].stat().st_size


@pytest.mark.parametrize(
    ("opset", "flags", "after"),
    [
        (17, ["--type", "int8"], 17),
        (17, ["--type", "int8", "--per-channel"], 17),
        (17, ["--bits", "4"], 21),
        (11, ["--type", "int8"], 11),
        (11, ["--type", "int8", "--per-channel"], 13),
    ],
)
def test_the_opset_is_raised_only_when_the_layout_needs_it(opset, flags, after, tmp_path):
    model = samples.small_cnn(seed=1)
    model.opset_import[0].version = opset
    src, out = tmp_path / "in.onnx", tmp_path / "out.onnx"
    onnx.save(model, src)
    run_cli("quantize", str(src), "-o", str(out), *flags, check=True)
    written = onnx.load(out)
    assert written.opset_import[0].version == after
    kept = [n for n in written.graph.node if n.op_type != "DequantizeLinear"]
    assert kept == list(model.graph.node)  # the rest of the graph untouched
    ort.InferenceSession(str(out), providers=["CPUExecutionProvider"]).run(None, FEEDS["cnn"])


def test_a_rewrite_with_nothing_to_quantize_is_protobuf_equal(models, tmp_path):
    out = tmp_path / "same.onnx"
    done = run_cli(
        "quantize", str(models["cnn"]), "-o", str(out), "--type", "int8",
        "--tensor-type", ".=keep", "--json", check=True,
    )  # fmt: skip
    assert json.loads(done.stdout)["quantized"] == 0
    assert onnx.load(out) == onnx.load(models["cnn"])


def test_requantizing_needs_allow_requantize(models, tmp_path):
    once, twice = tmp_path / "once.onnx", tmp_path / "twice.onnx"
    run_cli("quantize", str(models["cnn"]), "-o", str(once), "--type", "int8", check=True)
    done = run_cli("quantize", str(once), "-o", str(twice), "--type", "int8")
    assert done.returncode == 2 and "--allow-requantize" in done.stderr
    assert not twice.exists()
    run_cli(
        "quantize", str(once), "-o", str(twice), "--type", "int8", "--allow-requantize",
        check=True,
    )  # fmt: skip
    assert twice.exists()


def test_dry_run_reports_the_plan_and_writes_nothing(models, tmp_path):
    out = tmp_path / "q.onnx"
    done = run_cli("quantize", str(models["cnn"]), "-o", str(out), "--bits", "4", "--dry-run")
    assert done.returncode == 0, done.stderr
    assert "conv1.weight [16, 3, 3, 3] f32: int4" in done.stdout
    assert "fc.bias [10] f32: kept" in done.stdout
    assert "opset 17 -> 21" in done.stdout
    assert not out.exists()


def test_matmul_nbits_gives_the_outputs_of_the_same_int4_codes(models, tmp_path):
    """MatMulNBits and DequantizeLinear int4 layouts of the same codes agree."""
    dq, nbits = tmp_path / "dq.onnx", tmp_path / "nbits.onnx"
    src = str(models["transformer"])
    run_cli("quantize", src, "-o", str(dq), "--bits", "4", check=True)
    run_cli("quantize", src, "-o", str(nbits), "--bits", "4", "--matmul-nbits", check=True)
    ops = [n.op_type for n in onnx.load(nbits).graph.node]
    assert ops.count("MatMulNBits") == 7 and "DequantizeLinear" not in ops
    feeds = FEEDS["transformer"]
    x = ort.InferenceSession(str(dq), providers=["CPUExecutionProvider"]).run(None, feeds)[0]
    y = ort.InferenceSession(str(nbits), providers=["CPUExecutionProvider"]).run(None, feeds)[0]
    # the same weights (ONNX Runtime's kernel may round the activations on its own way)
    assert float((x * y).sum() / np.linalg.norm(x) / np.linalg.norm(y)) > 0.999


def test_matmul_nbits_says_why_a_weight_keeps_dequantize_linear(models, tmp_path):
    out = tmp_path / "q.onnx"
    done = run_cli(
        "quantize", str(models["cnn"]), "-o", str(out), "--bits", "4", "--matmul-nbits",
        "--dry-run",
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    lines = dict(line.split(": ", 1) for line in done.stdout.splitlines() if "[" in line)
    fc = "not MatMulNBits, which needs the weight to be only the second input of MatMul nodes"
    assert lines["fc.weight [10, 32] f32"].endswith(f"-> DequantizeLinear (default type; {fc})")


def test_tensor_type_overrides_pick_per_weight_types(models, tmp_path):
    out = tmp_path / "mixed.onnx"
    done = run_cli(
        "quantize", str(models["transformer"]), "-o", str(out), "--type", "int8",
        "--tensor-type", "^head=keep", "--tensor-type", "ffn=int4", "--json", check=True,
    )  # fmt: skip
    by_name = {t["name"]: t for t in json.loads(done.stdout)["tensors"]}
    assert by_name["head.weight"]["action"] == "keep"
    assert by_name["ffn.up.weight"]["type"] == "int4"
    assert by_name["attn.q.weight"]["type"] == "int8"
    inits = {i.name: i.data_type for i in onnx.load(out).graph.initializer}
    assert inits["ffn.up.weight_quantized"] == onnx.TensorProto.INT4
    assert inits["head.weight"] == onnx.TensorProto.FLOAT


@pytest.mark.realfile
@pytest.mark.parametrize(
    ("flags", "max_ratio", "min_cosine"),
    [(["--type", "int8", "--per-channel"], 0.35, 0.98), (["--bits", "4"], 0.25, 0.9)],
    ids=["int8_per_channel", "int4"],
)
def test_silero_quantized_runs_and_validates(
    flags, max_ratio, min_cosine, silero_vad_onnx, tmp_path
):
    src = silero_vad_onnx["silero_vad.onnx"]
    out = tmp_path / "q.onnx"
    run_cli("quantize", str(src), "-o", str(out), *flags, check=True)
    done = run_cli(
        "validate", str(src), str(out), "--input-shape", "input=1x512",
        "--input-value", "sr=16000", "--json", "--threshold", "0",
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    assert report["weights"]["quantized"] == 16 and report["weights"]["missing"] == 0
    assert report["size"]["ratio"] < max_ratio
    assert report["runtime"]["outputs"]["output"]["cosine"] > min_cosine


def test_matmul_nbits_weights_are_the_dequantize_linear_weights_in_onnx_runtime(tmp_path):
    """One MatMulNBits node fed the identity returns its weight: the packing, as ONNX
    Runtime reads it, holds exactly the int4 DequantizeLinear weights."""
    from bundler.containers.onnx.compare import dequantized_weights
    from bundler.containers.onnx.rewrite import quantize_model

    k, n = 64, 48
    w = np.random.default_rng(2).standard_normal((k, n)).astype(np.float32)
    for asym in (False, True):
        graph = helper.make_graph(
            [helper.make_node("MatMul", ["A", "W"], ["Y"])], "one",
            [helper.make_tensor_value_info("A", 1, [k, k])],
            [helper.make_tensor_value_info("Y", 1, [k, n])],
            initializer=[onnx.numpy_helper.from_array(w, "W")],
        )  # fmt: skip
        model = samples._model(graph)
        kind = "uint4" if asym else "int4"
        dq, _, _ = quantize_model(
            onnx.ModelProto.FromString(model.SerializeToString()), Options(kind)
        )
        nb, _, _ = quantize_model(model, Options(kind, matmul_nbits=True))
        path = tmp_path / f"nb_{kind}.onnx"
        onnx.save(nb, path)
        y = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(
            None, {"A": np.eye(k, dtype=np.float32)}
        )[0]
        assert np.array_equal(y, dequantized_weights(dq)["W"][0])


def _restated(x: np.ndarray, scheme: Scheme, axis: int):
    """ONNX weight quantization restated in numpy from its documented rules: MinMax ranges
    widened to 0; signed scale = (value of largest magnitude, the negative one on a tie) /
    qmin, unsigned (hi - lo) / (qmax - qmin) and zero point rint(qmin - lo / scale); one
    value c: scale |c|; scale 0: 1; scales in float32, codes rint(x / scale) + zero in
    float32, saturated; blocks padded with their last value. Codes in x's shape, scales
    and zero points in DequantizeLinear's."""
    qmin, qmax = scheme.qmin, scheme.qmax
    x = x.astype(np.float32)
    if scheme.granularity == "tensor":
        groups = x.reshape(1, -1)
    elif scheme.granularity == "channel":
        groups = np.moveaxis(x, axis, 0).reshape(x.shape[axis], -1)
    else:
        moved = np.moveaxis(x, axis, -1)
        k, size = moved.shape[-1], scheme.block_size
        pad = np.repeat(moved[..., -1:], -k % size, axis=-1)
        groups = np.concatenate([moved, pad], axis=-1).reshape(-1, size)
    lo = groups.min(axis=1).astype(np.float64)
    hi = groups.max(axis=1).astype(np.float64)
    lo0, hi0 = np.minimum(lo, 0), np.maximum(hi, 0)
    extreme = np.where(-lo0 >= hi0, lo0, hi0)
    scale = extreme / qmin if scheme.signed else (hi0 - lo0) / (qmax - qmin)
    scale = np.where(lo == hi, np.abs(lo), scale)
    scale = np.where(scale == 0, 1.0, scale).astype(np.float32)
    zero = np.zeros_like(scale)
    if not scheme.signed:
        zero = np.clip(np.rint(qmin - lo0 / scale.astype(np.float64)), qmin, qmax)
    zero = zero.astype(np.float32)
    q = np.clip(np.rint(groups / scale[:, None]) + zero[:, None], qmin, qmax)
    if scheme.granularity == "tensor":
        return q.reshape(x.shape), scale.reshape(()), zero.reshape(())
    if scheme.granularity == "channel":
        rest = np.moveaxis(x, axis, 0).shape
        return np.moveaxis(q.reshape(rest), 0, axis), scale, zero
    lead = moved.shape[:-1]
    codes = np.moveaxis(q.reshape(*lead, -1)[..., :k], -1, axis)
    return (codes, np.moveaxis(scale.reshape(*lead, -1), -1, axis),
            np.moveaxis(zero.reshape(*lead, -1), -1, axis))  # fmt: skip


@pytest.mark.parametrize(
    "scheme",
    [Scheme(8, True, "tensor"), Scheme(8, False, "channel"), Scheme(4, True, "block", 32),
     Scheme(4, False, "block", 16), Scheme(8, True, "block", 7)],
    ids=["int8_tensor", "uint8_channel", "int4_block32", "uint4_block16", "int8_block7"],
)  # fmt: skip
def test_codes_scales_and_zero_points_equal_the_restated_onnx_arithmetic(scheme):
    """The ranges include ties, a constant block and zeros; the 40 values of the block axis
    leave a short last block for 16, 32 and 7."""
    x = np.random.default_rng(4).standard_normal((5, 40, 3)).astype(np.float32)
    x[0, :16] = 0.0
    x[1, :, 0] = 0.75
    got = quantize(x, scheme, 1)
    codes, scale, zero = _restated(x, scheme, 1)
    assert got.scale.dtype == np.float32 and got.scale.shape == scale.shape
    assert got.scale.tobytes() == scale.tobytes()
    assert np.array_equal(got.codes.astype(np.float32), codes)
    assert (got.zero_point is None) == scheme.signed
    if got.zero_point is not None:
        assert np.array_equal(got.zero_point.astype(np.float32), zero)


def _branchy_model() -> onnx.ModelProto:
    """A top-level MatMul weight and an If whose branches hold their MatMul weights as
    initializers (then) and as a Constant (else): all three rewritten in one pass."""
    rng = np.random.default_rng(9)

    def arr(*shape):
        return rng.standard_normal(shape).astype(np.float32)

    then_g = helper.make_graph(
        [helper.make_node("MatMul", ["h", "tw"], ["t_out"])], "then", [],
        [helper.make_tensor_value_info("t_out", 1, [2, 8])],
        initializer=[onnx.numpy_helper.from_array(arr(16, 8), "tw")],
    )  # fmt: skip
    else_g = helper.make_graph(
        [helper.make_node("Constant", [], ["ew"], value=onnx.numpy_helper.from_array(arr(16, 8))),
         helper.make_node("MatMul", ["h", "ew"], ["e_out"])], "else", [],
        [helper.make_tensor_value_info("e_out", 1, [2, 8])],
    )  # fmt: skip
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["a", "w"], ["h"]),
         helper.make_node("If", ["cond"], ["y"], then_branch=then_g, else_branch=else_g)],
        "branchy",
        [helper.make_tensor_value_info("a", 1, [2, 16]),
         helper.make_tensor_value_info("cond", 9, [])],
        [helper.make_tensor_value_info("y", 1, [2, 8])],
        initializer=[onnx.numpy_helper.from_array(arr(16, 16), "w")],
    )  # fmt: skip
    return samples._model(graph)


@pytest.mark.parametrize("flags", [["--type", "int8"], ["--bits", "4"],
                                   ["--bits", "4", "--matmul-nbits"]])  # fmt: skip
def test_weights_at_every_depth_are_rewritten_in_one_pass(flags, tmp_path):
    src, out = tmp_path / "branchy.onnx", tmp_path / "q.onnx"
    onnx.save(_branchy_model(), src)
    done = run_cli("quantize", str(src), "-o", str(out), *flags, "--json", check=True)
    assert json.loads(done.stdout)["quantized"] == 3
    model = onnx.load(out)
    from bundler.containers.onnx.graph import scopes

    floats = [i.name for s in scopes(model.graph) for i in s.graph.initializer
              if i.data_type == onnx.TensorProto.FLOAT and i.name in ("w", "tw")]  # fmt: skip
    assert floats == []
    a = ort.InferenceSession(str(src), providers=["CPUExecutionProvider"])
    b = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"])
    x = np.random.default_rng(0).standard_normal((2, 16)).astype(np.float32)
    for cond in (True, False):
        feeds = {"a": x, "cond": np.array(cond)}
        ya, yb = a.run(None, feeds)[0], b.run(None, feeds)[0]
        assert float((ya * yb).sum() / np.linalg.norm(ya) / np.linalg.norm(yb)) > 0.95


@pytest.mark.parametrize(
    "scheme",
    [Scheme(4, True, "block", 32), Scheme(4, False, "block", 16), Scheme(8, True, "block", 7),
     Scheme(8, False, "block", 128)],
    ids=["int4_block32", "uint4_block16", "int8_block7", "uint8_block128"],
)  # fmt: skip
@pytest.mark.parametrize("dtype", [np.float32, np.float16])
def test_blocks_down_a_matrix_s_first_axis_equal_the_restated_onnx_arithmetic(scheme, dtype):
    """A MatMul weight [K, N] blocked along K (read in place, not transposed): K = 70 leaves
    a short last block; a constant block, zeros and a lone extreme."""
    x = np.random.default_rng(8).standard_normal((70, 24)).astype(np.float32)
    x[:32, 3] = 0.5
    x[:, 5] = 0.0
    x[40, 9] = 7.0
    x = x.astype(dtype)
    got = quantize(x, scheme, 0)
    codes, scale, zero = _restated(x.astype(np.float32), scheme, 0)
    assert got.scale.dtype == dtype and got.scale.shape == scale.shape
    assert np.array_equal(got.scale.astype(np.float32), scale.astype(dtype).astype(np.float32))
    if dtype == np.float32:  # (a float16 scale rounds: the codes follow the stored scale)
        assert np.array_equal(got.codes.astype(np.float32), codes)
        if got.zero_point is not None:
            assert np.array_equal(got.zero_point.astype(np.float32), zero)
    moved = np.moveaxis(quantize(x[:, :, None], scheme, 0).codes, -1, 0)[0]  # the general path
    assert np.array_equal(got.codes, moved)


@pytest.mark.parametrize("signed", [True, False], ids=["int4", "uint4"])
@pytest.mark.parametrize("k", [64, 70])
def test_matmul_nbits_packing_holds_the_blocked_codes(signed, k):
    """B [N, blocks, 16]: the codes of W^T's blocks along K (offset by 8 when signed),
    two a byte, low nibble first, padding codes the zero point; the scales and zero
    points those of the same blocks quantized for DequantizeLinear."""
    from bundler.containers.onnx import quant

    w = np.random.default_rng(6).standard_normal((k, 24)).astype(np.float32)
    w[:32, 3] = 0.5  # a constant block
    scheme = Scheme(4, signed, "block", 32)
    packed, scales, zero = quant.nbits_layout(w, scheme)
    blocked = quantize(w, scheme, 0)  # codes [K, N], scales [blocks, N]
    blocks = -(-k // 32)
    assert packed.shape == (24, blocks, 16) and packed.dtype == np.uint8
    codes = np.empty((24, blocks * 32), np.int64)
    codes[:, 0::2] = packed.reshape(24, -1) & 0xF
    codes[:, 1::2] = packed.reshape(24, -1) >> 4
    z = np.full((24, blocks), 8) if signed else blocked.zero_point.T.astype(np.int64)
    assert np.array_equal(codes[:, :k], blocked.codes.T.astype(np.int64) + (8 if signed else 0))
    assert np.array_equal(codes[:, k:], np.repeat(z[:, -1:], blocks * 32 - k, axis=1))
    assert np.array_equal(scales, blocked.scale.T)
    assert np.array_equal(zero.astype(np.int64), z)


def test_the_report_counts_external_data_in_both_sizes(tmp_path):
    src, out = tmp_path / "ext.onnx", tmp_path / "q.onnx"
    onnx.save(
        BUILDERS["transformer"](seed=5), src,
        save_as_external_data=True, location="ext.bin", size_threshold=0,
    )  # fmt: skip
    done = run_cli("quantize", str(src), "-o", str(out), "--type", "int8", "--json")
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    assert report["source_bytes"] == src.stat().st_size + (tmp_path / "ext.bin").stat().st_size
    assert report["output_bytes"] == sum((tmp_path / p).stat().st_size for p in report["outputs"])
    assert report["output_bytes"] < report["source_bytes"] / 3
