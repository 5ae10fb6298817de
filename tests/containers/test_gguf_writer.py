"""The GGUF writer: what it refuses (llama.cpp's rules and GGUF's own), its options, and the
layout decisions formats/gguf.md states."""

from __future__ import annotations

import gguf
import numpy as np
import pytest
from gguf_samples import (
    assert_llama_readable,
    small_bundle,
    written_ggufs_pass_llama_rules,  # noqa: F401
)

import bundler
from bundler.bundle import Bundle, Tensor, Value, ValueType
from bundler.containers import gguf as gguf_container
from bundler.containers.gguf.rules import check_llama_rules
from bundler.errors import UsageError


def _bundle(*tensors: Tensor, **metadata: Value) -> Bundle:
    b = Bundle({"general.architecture": "llama"}, list(tensors))
    for k, v in metadata.items():
        b.metadata[k.replace("__", ".")] = v
    return b


_F32 = np.zeros((2, 32), np.float32)
_NESTED = Value(
    ValueType.ARRAY,
    [Value(ValueType.ARRAY, np.arange(2, dtype=np.int32), ValueType.INT32)],
    ValueType.ARRAY,
)


@pytest.mark.parametrize(
    ("bundle", "message", "llama_only"),
    [
        (_bundle(Tensor.from_array("n" * 64, _F32)), "64 bytes", True),
        (_bundle(Tensor.from_array("t", np.zeros((1, 1, 1, 1, 2), np.float32))), "5 dim", True),
        (_bundle(a__nested=_NESTED), "array of arrays", True),
        (_bundle(Tensor.from_raw("t", (2, 33), "q8_0", bytes(2 * 34))), "multiple of 32", False),
        (_bundle(Tensor.from_array("t", np.zeros(4, np.uint8))), "no GGML type", False),
        (_bundle(general__alignment=Value(ValueType.INT32, 32)), "must be UINT32", False),
        (_bundle(general__alignment=Value(ValueType.UINT32, 48)), "power of two", False),
        (_bundle(x=Value(ValueType.UINT8, 256)), "does not fit UINT8", False),
        (_bundle(x=Value(ValueType.INT16, -40000)), "does not fit INT16", False),
        (
            _bundle(x=Value(ValueType.ARRAY, np.array([1, 300]), ValueType.UINT8)),
            "out of range for UINT8",
            False,
        ),
        (_bundle(x=Value(ValueType.STRING, 5)), "STRING value is a int", False),
        (_bundle(**{"": Value(ValueType.UINT8, 1)}), "non-empty", False),
    ],
    ids=[
        "name-64-bytes",
        "5-dims",
        "nested-array",
        "row-not-block-multiple",
        "codec-without-ggml-id",
        "alignment-int32",
        "alignment-48",
        "uint8-256",
        "int16-range",
        "uint8-array-range",
        "string-not-str",
        "empty-key",
    ],
)
def test_writer_refuses_what_readers_would_reject(tmp_path, bundle, message, llama_only):
    out = tmp_path / "nonllama.gguf"
    with pytest.raises(UsageError, match=message):
        gguf_container.write(bundle, out)
    assert not out.exists() and not list(tmp_path.iterdir())
    if llama_only:  # the documented way out: valid GGUF that llama.cpp does not read
        gguf_container.write(bundle, out, llama_compatible=False)
        assert check_llama_rules(out)
        again = bundler.open(out)
        assert again.metadata == bundle.metadata and list(again.tensors) == list(bundle.tensors)
        assert list(gguf.GGUFReader(out).tensors) or not bundle.tensors
    else:
        with pytest.raises(UsageError):
            gguf_container.write(bundle, out, llama_compatible=False)


def test_unknown_write_option_is_a_usage_error(tmp_path):
    with pytest.raises(UsageError, match="unknown GGUF write option"):
        gguf_container.write(small_bundle(), tmp_path / "x.gguf", endian="big")


@pytest.mark.parametrize("shape", [(32,), (1, 32), (1, 1, 32), (2, 1, 1, 32), ()])
def test_n_dims_is_the_numpy_rank_and_survives_a_round_trip(tmp_path, shape):
    t = Tensor.from_array("t", np.ones(shape, np.float32))
    out = tmp_path / "t.gguf"
    gguf_container.write(_bundle(t), out)
    assert_llama_readable(out)
    assert bundler.open(out).tensors["t"].shape == shape
    again = tmp_path / "again.gguf"
    bundler.open(out).save(again)
    assert again.read_bytes() == out.read_bytes()


def test_big_endian_is_kept_from_the_source_unless_told_otherwise(tmp_path):
    be, le, be2 = tmp_path / "be.gguf", tmp_path / "le.gguf", tmp_path / "be2.gguf"
    gguf_container.write(small_bundle(), be, big_endian=True)
    source = bundler.open(be)
    assert source.format_info["big_endian"]
    source.save(be2)
    assert be2.read_bytes() == be.read_bytes()
    source.save(le, big_endian=False)
    assert le.read_bytes()[4:8] == b"\x03\x00\x00\x00"
    fresh = tmp_path / "fresh.gguf"
    small_bundle().save(fresh)
    assert fresh.read_bytes() == le.read_bytes()


def test_big_endian_write_leaves_in_memory_bytes_alone(tmp_path):
    raw = np.arange(40, dtype=np.uint8).tobytes() + bytes(28)
    t = Tensor.from_raw("q", (2, 32), "q8_0", np.frombuffer(raw, np.uint8).copy())
    before = t.raw().copy()
    gguf_container.write(_bundle(t), tmp_path / "be.gguf", big_endian=True)
    assert np.array_equal(t.raw(), before)
    assert bundler.open(tmp_path / "be.gguf").tensors["q"].raw().tobytes() == before.tobytes()


def test_tensor_data_is_padded_after_every_tensor_and_offsets_follow_llama_rule(tmp_path):
    out = tmp_path / "p.gguf"
    gguf_container.write(small_bundle(), out)
    reader = gguf.GGUFReader(out)
    end = max(int(t.data_offset) + int(t.n_bytes) for t in reader.tensors)
    assert out.stat().st_size == end + (-end % 32)
    assert all(int(t.data_offset) % 32 == 0 for t in reader.tensors)


def test_source_that_gives_the_wrong_byte_count_is_refused(tmp_path):
    t = Tensor.from_raw("q", (1, 32), "q8_0", bytes(34))
    t.shape = (2, 32)  # now claims 68 bytes
    with pytest.raises(UsageError, match="gave 34 bytes"):
        gguf_container.write(_bundle(t), tmp_path / "bad.gguf")
    assert not (tmp_path / "bad.gguf").exists()


def test_array_item_type_given_as_a_plain_int_is_written(tmp_path):
    b = _bundle()
    b.metadata.set("tokenizer.ggml.tokens", ["a", "b"], ValueType.ARRAY, 8)
    b.metadata.set("ids", [1, 2], ValueType.ARRAY, 4)
    gguf_container.write(b, tmp_path / "t.gguf")
    again = bundler.open(tmp_path / "t.gguf").metadata
    assert again["tokenizer.ggml.tokens"] == ["a", "b"]
    assert again.typed("ids").value.dtype == "<u4"
    with pytest.raises(UsageError, match="not a GGUF value type"):
        b.metadata.set("bad", [1], ValueType.ARRAY, 99)
        gguf_container.write(b, tmp_path / "bad.gguf")


@pytest.mark.parametrize("where", ["key", "value", "array", "tensor"])
def test_text_that_is_not_utf8_encodable_is_a_usage_error(tmp_path, where):
    bad = "x\ud800"  # a lone surrogate that is not an escaped byte
    b = _bundle()
    if where == "key":
        b.metadata[bad] = Value(ValueType.UINT8, 1)
    elif where == "value":
        b.metadata["k"] = Value(ValueType.STRING, bad)
    elif where == "array":
        b.metadata["k"] = Value(ValueType.ARRAY, ["a", bad], ValueType.STRING)
    else:
        b.add(Tensor.from_array(bad, np.zeros(4, np.float32)))
    with pytest.raises(UsageError, match="UTF-8"):
        gguf_container.write(b, tmp_path / "t.gguf")


def test_undecodable_bytes_in_a_file_are_kept_on_rewrite(tmp_path):
    import gguf_hostile

    raw = gguf_hostile.valid()
    raw.kvs.append(gguf_hostile.kv("odd", 8, gguf_hostile.string(b"\xff\xfe ok")))
    src = tmp_path / "odd.gguf"
    src.write_bytes(raw.build())
    bundle = bundler.open(src)
    assert bundle.metadata["odd"] == "\udcff\udcfe ok"
    bundle.save(tmp_path / "again.gguf")
    assert (tmp_path / "again.gguf").read_bytes() == src.read_bytes()
