"""Hostile ONNX files: cut at every byte, lying external-data entries, protobufs that are
not models, opsets ONNX Runtime cannot run. Typed errors, no traceback, bounded memory,
nothing half-written."""

from __future__ import annotations

import os
import re
import tracemalloc

import numpy as np
import onnx
import pytest
from conftest import run_cli
from onnx import numpy_helper
from onnx_samples import nested_model

from bundler.containers.onnx import read
from bundler.errors import FormatError, TruncatedError


def test_every_truncation_of_a_small_model_is_a_typed_error(tmp_path):
    data = nested_model().SerializeToString()
    path = tmp_path / "cut.onnx"
    for n in range(len(data)):
        path.write_bytes(data[:n])
        with pytest.raises(FormatError):
            read(str(path))
    path.write_bytes(data)
    assert len(read(str(path)).tensors) == 7


@pytest.mark.parametrize("n", [0, 1, 3, 40, 200])
def test_a_cut_model_exits_4_on_the_command_line_without_traceback(n, tmp_path):
    path = tmp_path / "cut.onnx"
    path.write_bytes(nested_model().SerializeToString()[:n])
    done = run_cli("inspect", str(path))
    assert done.returncode == 4, done.stderr
    assert done.stderr.startswith(f"bundler: error: {path}")
    assert "Traceback" not in done.stderr


def _external_model(tmp_path, **entries: str) -> str:
    """A model whose weight `w` (6 float32) lives in `w.bin`, with external-data entries
    overridden by `entries`."""
    model = nested_model()
    w = model.graph.initializer[0]
    (tmp_path / "w.bin").write_bytes(b"\0" * 8 + numpy_helper.to_array(w).tobytes())
    w.ClearField("raw_data")
    w.data_location = onnx.TensorProto.EXTERNAL
    info = {"location": "w.bin", "offset": "8", "length": "24"} | entries
    for key, value in info.items():
        if value is not None:
            w.external_data.add(key=key, value=value)
    path = tmp_path / "ext.onnx"
    path.write_bytes(model.SerializeToString())
    return str(path)


def test_an_honest_external_entry_reads(tmp_path):
    assert read(_external_model(tmp_path)).tensors["w"].numpy().tolist() == [
        [0, 1, 2], [3, 4, 5]
    ]  # fmt: skip


@pytest.mark.parametrize(
    ("entries", "error", "says"),
    [
        ({"offset": "16"}, TruncatedError, "needs bytes 16..40 but the file ends at 32"),
        ({"offset": str(2**40)}, TruncatedError, "but the file ends at 32"),
        ({"length": "23"}, FormatError, "needs 24 bytes, its external-data length says 23"),
        ({"length": str(2**40)}, FormatError, "its external-data length says"),
        ({"offset": "-8"}, FormatError, "negative external offset"),
        ({"offset": "eight"}, FormatError, "are not integers"),
        ({"location": "gone.bin"}, FormatError, "external data file 'gone.bin' is missing"),
        ({"location": "../w.bin"}, FormatError, "not a relative path inside"),
        ({"location": "/etc/passwd"}, FormatError, "not a relative path inside"),
        ({"location": None}, FormatError, "not a relative path inside"),
    ],
    ids=["offset_past_end", "huge_offset", "short_length", "huge_length", "negative",
         "not_a_number", "missing_file", "parent_dir", "absolute", "no_location"],
)  # fmt: skip
def test_lying_external_data_entries_are_typed_errors_in_bounded_memory(
    entries, error, says, tmp_path
):
    path = _external_model(tmp_path, **entries)
    tracemalloc.start()
    try:
        with pytest.raises(error) as info:
            read(path)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert says in str(info.value)
    assert "'w'" in str(info.value)
    assert peak < 4 << 20


@pytest.mark.parametrize(
    ("content", "says"),
    [
        (numpy_helper.from_array(np.zeros(3, np.float32), "t").SerializeToString(), "not"),
        (nested_model().graph.SerializeToString(), "not"),
        (b"\x08\x07\x12\x03abc", "no graph"),
        (os.urandom(64) + b"\xff" * 8, "not"),
    ],
    ids=["tensor_proto", "graph_proto", "model_without_graph", "random"],
)
def test_a_protobuf_that_is_not_a_model_is_refused(content, says, tmp_path):
    path = tmp_path / "thing.onnx"
    path.write_bytes(content)
    with pytest.raises(FormatError) as info:
        read(str(path))
    assert says in str(info.value)
    done = run_cli("validate", str(path))
    assert done.returncode == 4 and "Traceback" not in done.stderr


def test_a_cut_model_leaves_no_quantized_output(tmp_path):
    src = tmp_path / "cut.onnx"
    src.write_bytes(nested_model().SerializeToString()[:100])
    out = tmp_path / "out.onnx"
    done = run_cli("quantize", str(src), "-o", str(out), "--type", "int8")
    assert done.returncode == 4 and "Traceback" not in done.stderr
    assert sorted(os.listdir(tmp_path)) == ["cut.onnx"]


def test_an_opset_onnx_runtime_cannot_run_is_a_typed_error(tmp_path):
    model = nested_model()
    model.opset_import[0].version = 99
    path = tmp_path / "future.onnx"
    onnx.save(model, path)
    assert len(read(str(path)).tensors) == 7  # reading needs no runtime
    done = run_cli("validate", str(path), str(path))
    assert done.returncode == 4, done.stderr
    assert "ONNX Runtime cannot run it" in done.stderr
    assert "Traceback" not in done.stderr


def _not_utf8(data: bytes, text: bytes) -> bytes:
    """`data` with the first occurrence of `text` given a byte that is not UTF-8."""
    at = data.index(text)
    return data[:at] + b"\xe8" + data[at + 1 :]


@pytest.mark.parametrize(
    ("text", "field"),
    [(b"MatMul", "graph.node[2].op_type"), (b"y_then", "graph.node[3].attribute[1].g.node[1]")],
)
@pytest.mark.parametrize("command", ["inspect", "validate", "convert", "quantize"])
def test_a_string_that_is_not_utf8_is_a_typed_error_naming_its_field(
    text, field, command, tmp_path
):
    # proto2 parsers hand such a string back as bytes, where every reader expects text
    path = tmp_path / "m.onnx"
    path.write_bytes(_not_utf8(nested_model().SerializeToString(), text))
    with pytest.raises(FormatError, match=re.escape(f"string field {field}")):
        read(str(path))
    outputs = {
        "convert": ["-o", str(tmp_path / "m.safetensors")],
        "quantize": ["-o", str(tmp_path / "q.onnx"), "--type", "int8"],
    }
    out = outputs.get(command, [])
    done = run_cli(command, str(path), *out)
    # validate reports a file that parses but is not a valid model as a failed validation
    assert done.returncode == (5 if command == "validate" else 4), done.stderr
    assert field in done.stdout + done.stderr and "Traceback" not in done.stderr
    assert sorted(os.listdir(tmp_path)) == ["m.onnx"]


def test_quantizing_a_weight_whose_dims_outgrow_its_data_is_a_typed_error(tmp_path):
    model = nested_model()
    model.graph.initializer[0].dims[1] = 3000  # 24 bytes of raw_data for 6,000 floats
    src, out = tmp_path / "m.onnx", tmp_path / "q.onnx"
    src.write_bytes(model.SerializeToString())
    done = run_cli("quantize", str(src), "-o", str(out), "--type", "int8")
    assert done.returncode == 4, done.stderr
    assert f"bundler: error: {src}" in done.stderr and "tensor 'w'" in done.stderr
    assert "Traceback" not in done.stderr
    assert sorted(os.listdir(tmp_path)) == ["m.onnx"]


@pytest.mark.parametrize("bad_first", [True, False])
def test_validating_a_pair_with_a_weight_whose_dims_outgrow_its_data_names_that_file(
    bad_first, tmp_path
):
    good, bad = tmp_path / "good.onnx", tmp_path / "bad.onnx"
    model = nested_model()
    good.write_bytes(model.SerializeToString())
    model.graph.initializer[0].dims[0] = 7  # 24 bytes of raw_data for 21 floats
    bad.write_bytes(model.SerializeToString())
    pair = (bad, good) if bad_first else (good, bad)
    done = run_cli("validate", str(pair[0]), str(pair[1]))
    assert done.returncode == 4, done.stderr
    assert f"bundler: error: {bad}: tensor 'w'" in done.stderr
    assert "Traceback" not in done.stderr
