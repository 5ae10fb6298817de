"""The `gguf` package as an independent oracle, both ways: GGUFReader reads what bundler
writes, bundler reads what GGUFWriter writes."""

from __future__ import annotations

import gguf
import numpy as np
import pytest
from gguf import GGUFEndian, GGUFValueType
from gguf_samples import (
    assert_gguf_reader_agrees,
    assert_llama_readable,
    every_value_metadata,
    quantized,
    small_bundle,
    written_ggufs_pass_llama_rules,  # noqa: F401
)

import bundler
from bundler.bundle import Value, ValueType
from bundler.codecs.byteorder import swapped
from bundler.containers import gguf as gguf_container


@pytest.mark.parametrize("big_endian", [False, True], ids=["le", "be"])
def test_gguf_reader_reads_what_bundler_writes(tmp_path, big_endian):
    bundle = small_bundle()
    path = tmp_path / "out.gguf"
    gguf_container.write(bundle, path, big_endian=big_endian)
    assert_llama_readable(path, big_endian)
    assert_gguf_reader_agrees(path, bundle, big_endian)


def test_gguf_reader_reads_custom_alignment(tmp_path):
    bundle = small_bundle()
    bundle.metadata.set("general.alignment", 256, ValueType.UINT32)
    path = tmp_path / "aligned.gguf"
    gguf_container.write(bundle, path)
    assert_llama_readable(path)
    assert_gguf_reader_agrees(path, bundle)
    reader = gguf.GGUFReader(path)
    assert all(int(t.data_offset) % 256 == 0 for t in reader.tensors)


def _add_typed(writer: gguf.GGUFWriter, key: str, value: Value) -> None:
    if value.type == ValueType.ARRAY:
        items = value.value.tolist() if isinstance(value.value, np.ndarray) else value.value
        writer.add_key_value(
            key, items, GGUFValueType.ARRAY, sub_type=GGUFValueType(int(value.item_type))
        )
    else:
        writer.add_key_value(key, value.value, GGUFValueType(int(value.type)))


def _gguf_writer_file(path, endian: GGUFEndian, alignment: int | None = None):
    """A file written by gguf.GGUFWriter: every value type, arrays, four tensor types."""
    md = every_value_metadata()
    writer = gguf.GGUFWriter(path, arch="llama", endianess=endian)
    for key, value in md.typed_items():
        if key != "general.architecture":
            _add_typed(writer, key, value)
    if alignment:
        writer.add_custom_alignment(alignment)
        md.set("general.alignment", alignment, ValueType.UINT32)
    rng = np.random.default_rng(3)
    f32 = rng.standard_normal((3, 32)).astype(np.float32)
    f16 = rng.standard_normal(48).astype(np.float16)
    q8 = quantized("q", "q8_0", (2, 64))
    q41 = quantized("q", "q4_1", (4, 32), seed=5)
    big = endian == GGUFEndian.BIG
    # GGUFWriter swaps element arrays itself; uint8 block rows it cannot, so they are given
    # with their half fields already swapped.
    writer.add_tensor("f32", f32)
    writer.add_tensor("f16", f16)
    for name, t in (("q8", q8), ("q41", q41)):
        raw = t.raw().reshape(t.codec.encoded_shape(t.shape))
        if big:
            raw = swapped(raw, t.codec.facts).reshape(raw.shape)
        writer.add_tensor(name, raw, raw_dtype=gguf.GGMLQuantizationType[t.codec.name.upper()])
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    arrays = {"f32": f32, "f16": f16}
    raws = {"q8": q8.raw(), "q41": q41.raw()}
    return md, arrays, raws


@pytest.mark.parametrize(
    ("endian", "alignment"),
    [(GGUFEndian.LITTLE, None), (GGUFEndian.BIG, None), (GGUFEndian.LITTLE, 64)],
    ids=["le", "be", "align64"],
)
def test_bundler_reads_what_gguf_writer_writes(tmp_path, endian, alignment):
    path = tmp_path / "ref.gguf"
    md, arrays, raws = _gguf_writer_file(path, endian, alignment)
    bundle = bundler.open(path)
    assert bundle.format_info["big_endian"] == (endian == GGUFEndian.BIG)
    assert bundle.metadata == md
    for name, a in arrays.items():
        t = bundle.tensors[name]
        assert t.shape == a.shape
        assert t.raw().tobytes() == a.tobytes()
        np.testing.assert_array_equal(t.numpy(), a.astype(np.float32))
    for name, raw in raws.items():
        assert bundle.tensors[name].raw().tobytes() == raw.tobytes()
        assert b"".join(c.tobytes() for c in bundle.tensors[name].iter_raw(64)) == raw.tobytes()


@pytest.mark.parametrize("endian", [GGUFEndian.LITTLE, GGUFEndian.BIG], ids=["le", "be"])
def test_rewrite_of_gguf_writer_file_is_byte_identical(tmp_path, endian):
    src = tmp_path / "ref.gguf"
    _gguf_writer_file(src, endian)
    out = tmp_path / "out.gguf"
    bundler.open(src).save(out)
    assert out.read_bytes() == src.read_bytes()
