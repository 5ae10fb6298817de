"""Weights left in the file: quantizing reads the main graph's large float initializers
from a mapping of the file instead of parsing them (bundler/containers/onnx/wire.py). The
output is the same as with the whole model parsed, a layout the scan does not expect is
parsed whole, and a cut file is a typed error that writes nothing."""

from __future__ import annotations

import os

import numpy as np
import onnx
import pytest
from onnx import helper, numpy_helper

from bundler.containers.onnx import samples, wire
from bundler.containers.onnx.reader import load_model
from bundler.containers.onnx.rewrite import Options, quantize_file, quantize_model
from bundler.errors import BundlerError, FormatError

OPTIONS = {
    "int8_channel": Options("int8", per_channel=True),
    "int4_matmul_nbits": Options("int4", block_size=32, matmul_nbits=True),
    "uint4_blocks": Options("uint4", block_size=16),  # raises the opset: parsed again
    "nothing": Options("int8", tensor_types=[(".", "keep")]),
}
MODELS = {
    "transformer": lambda: samples.transformer_block(0, 128, 256, 10, 4),
    "cnn": lambda: samples.small_cnn(0, (32, 64), 10, 32),
}


def _whole_parse_bytes(src: str, options: Options) -> bytes:
    """The rewrite of `src` from a model parsed whole (no weight left in the file)."""
    model, _, _ = quantize_model(load_model(src), options)
    return model.SerializeToString()


def _split(path) -> tuple[bytes, list[wire.InPlace]] | None:
    data = bytearray(path.read_bytes())
    with memoryview(data) as view:
        return wire.split(view)


@pytest.mark.parametrize("options", OPTIONS.values(), ids=OPTIONS.keys())
@pytest.mark.parametrize("model", MODELS.keys())
def test_weights_left_in_the_file_give_the_bytes_of_a_whole_parse(model, options, tmp_path):
    src, dst = tmp_path / "m.onnx", tmp_path / "q.onnx"
    onnx.save(MODELS[model](), src)
    assert _split(src) is not None  # the models have weights to leave in the file
    quantize_file(str(src), str(dst), options)
    assert dst.read_bytes() == _whole_parse_bytes(str(src), options)
    if options.tensor_types:
        assert onnx.load(dst) == onnx.load(src)


def test_split_leaves_the_large_float_initializers_of_the_main_graph(tmp_path):
    src = tmp_path / "m.onnx"
    model = MODELS["transformer"]()
    onnx.save(model, src)
    head, found = _split(src)
    data = src.read_bytes()
    big = [
        i for i, t in enumerate(model.graph.initializer)
        if t.data_type == 1 and len(t.raw_data) >= wire.MIN_IN_PLACE
    ]  # fmt: skip
    assert [e.index for e in found] == big
    parsed = onnx.ModelProto.FromString(head)
    for e in found:
        original = model.graph.initializer[e.index]
        assert data[e.offset : e.offset + e.length] == original.raw_data
        assert not parsed.graph.initializer[e.index].HasField("raw_data")
        parsed.graph.initializer[e.index].raw_data = data[e.offset : e.offset + e.length]
    assert parsed == model


def _with_weight(extra: bytes = b"") -> bytes:
    w = numpy_helper.from_array(
        np.random.default_rng(0).normal(size=(128, 128)).astype(np.float32), "w"
    )
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["x", "w"], ["y"])], "g",
        [helper.make_tensor_value_info("x", 1, [1, 128])],
        [helper.make_tensor_value_info("y", 1, [1, 128])], initializer=[w],
    )  # fmt: skip
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    return model.SerializeToString() + extra


def _field(number: int, payload: bytes) -> bytes:
    return wire._tag(number, wire.LEN) + wire._varint(len(payload)) + payload


#: a second graph field (protobuf merges the two)
MORE = _field(5, numpy_helper.from_array(np.ones((4, 4), np.float32), "more").SerializeToString())
ODD = {
    "graph_twice": _field(7, MORE),
    # a second producer_name after the graph: nothing odd, the weight is left in the file
    "trailing_field": _field(2, b"again"),
}


@pytest.mark.parametrize("name", ODD.keys())
def test_layouts_the_scan_does_not_expect_are_parsed_whole(name, tmp_path):
    src, dst = tmp_path / "m.onnx", tmp_path / "q.onnx"
    src.write_bytes(_with_weight(ODD[name]))
    assert (_split(src) is None) == (name == "graph_twice")
    options = Options("int8", per_channel=True)
    quantize_file(str(src), str(dst), options)
    assert dst.read_bytes() == _whole_parse_bytes(str(src), options)


def test_a_raw_data_field_given_twice_is_parsed_whole(tmp_path):
    data = _with_weight()
    model = onnx.ModelProto.FromString(data)
    w = model.graph.initializer[0]
    # protobuf keeps the last of a repeated bytes field: the scan must not pick the first
    tensor = w.SerializeToString() + _field(
        9, np.linspace(-1, 1, 128 * 128, dtype=np.float32).tobytes()
    )
    graph = model.graph
    del graph.initializer[:]
    graph_bytes = graph.SerializeToString() + _field(5, tensor)
    model.ClearField("graph")
    src = tmp_path / "m.onnx"
    src.write_bytes(model.SerializeToString() + _field(7, graph_bytes))
    assert _split(src) is None
    options = Options("int8", per_channel=True)
    quantize_file(str(src), str(tmp_path / "q.onnx"), options)
    assert (tmp_path / "q.onnx").read_bytes() == _whole_parse_bytes(str(src), options)


def test_cuts_of_a_model_with_weights_in_the_file_are_typed_errors_writing_nothing(tmp_path):
    data = _with_weight()
    src, dst = tmp_path / "cut.onnx", tmp_path / "q.onnx"
    # every byte of the structure before and after the weight's data, and into the data
    cuts = sorted({*range(0, 300), *range(len(data) - 300, len(data)),
                   *range(300, len(data) - 300, 509)})  # fmt: skip
    for n in cuts:
        src.write_bytes(data[:n])
        with pytest.raises(FormatError):
            quantize_file(str(src), str(dst), Options("int8", per_channel=True))
        assert sorted(os.listdir(tmp_path)) == ["cut.onnx"], n


def test_reading_keeps_large_weights_as_byte_ranges_of_the_model_file(tmp_path):
    from bundler.bundle import BytesSource, FileSource
    from bundler.containers.onnx import read
    from bundler.containers.onnx.details import OnnxDetails

    src = tmp_path / "m.onnx"
    model = MODELS["transformer"]()
    onnx.save(model, src)
    bundle = read(str(src))
    for init in model.graph.initializer:
        t = bundle.tensors[init.name]
        big = init.data_type == 1 and len(init.raw_data) >= wire.MIN_IN_PLACE
        assert isinstance(t.source, FileSource if big else BytesSource), init.name
        if big:
            assert t.source.path == str(src)
        assert t.raw().tobytes() == numpy_helper.to_array(init).tobytes(), init.name
    assert OnnxDetails.of(bundle).external_files == ()


def _outcome(run) -> tuple[str, object]:
    """("ok", output bytes) or ("error", the bundler error's type); anything else raises."""
    try:
        return "ok", run()
    except BundlerError as exc:
        return "error", type(exc)


def test_mutated_bytes_of_a_model_with_weights_in_the_file_read_as_a_whole_parse(tmp_path):
    # a seeded byte mutation of the structure around the weight's data (tags, lengths,
    # fields), each either the whole parse's output or its typed error, writing nothing
    data = _with_weight()
    weight = numpy_helper.from_array(
        np.random.default_rng(0).normal(size=(128, 128)).astype(np.float32)
    ).raw_data
    start = data.index(weight)
    around = [*range(0, start), *range(start + len(weight) - 8, len(data))]
    rng = np.random.default_rng(7)
    options = Options("int8", per_channel=True)
    src, dst = tmp_path / "m.onnx", tmp_path / "q.onnx"
    kinds = set()
    for at, value in zip(rng.choice(around, 400), rng.integers(0, 256, 400), strict=True):
        mutated = bytearray(data)
        mutated[at] = value
        src.write_bytes(mutated)
        whole = _outcome(lambda: _whole_parse_bytes(str(src), options))
        got = _outcome(lambda: (quantize_file(str(src), str(dst), options), dst.read_bytes())[1])
        assert got == whole, (at, value)
        if got[0] == "error":
            assert sorted(os.listdir(tmp_path)) == ["m.onnx"], (at, value)
        dst.unlink(missing_ok=True)
        kinds.add(got[0])
    assert kinds == {"ok", "error"}  # the mutations reach both outcomes
