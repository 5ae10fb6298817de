"""Split GGUF sets: written by tensor count or size, read back as the unsplit bundle."""

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
from bundler.bundle import Bundle, ValueType
from bundler.containers import gguf as gguf_container
from bundler.containers.gguf.split import SPLIT_KEYS
from bundler.errors import FormatError


def _same(a: Bundle, b: Bundle) -> None:
    assert a.metadata == b.metadata
    assert list(a.tensors) == list(b.tensors)
    for name, t in a.tensors.items():
        u = b.tensors[name]
        assert (t.shape, t.codec) == (u.shape, u.codec)
        assert t.raw().tobytes() == u.raw().tobytes()


@pytest.mark.parametrize(
    ("options", "shards"),
    [({"split_max_tensors": 2}, 3), ({"split_max_tensors": 1}, 5), ({"split_max_size": 300}, 3)],
    ids=["2-tensors", "1-tensor", "300-bytes"],
)
def test_split_set_reads_back_as_the_unsplit_bundle(tmp_path, options, shards):
    bundle = small_bundle()
    gguf_container.write(bundle, tmp_path / "model.gguf", **options)
    paths = sorted(tmp_path.glob("model-*-of-*.gguf"))
    assert [p.name for p in paths] == [
        f"model-{i:05d}-of-{shards:05d}.gguf" for i in range(1, shards + 1)
    ]
    assert not (tmp_path / "model.gguf").exists()
    for i, p in enumerate(paths):
        assert_llama_readable(p)
        fields = gguf.GGUFReader(p).fields
        assert fields["split.no"].contents() == i
        assert fields["split.count"].contents() == shards
        assert fields["split.tensors.count"].contents() == len(bundle.tensors)
        assert ("general.architecture" in fields) == (i == 0)
    for opened in (paths[0], paths[-1]):  # any shard opens the whole set
        merged = bundler.open(opened)
        _same(bundle, merged)
        assert not any(k in merged.metadata for k in SPLIT_KEYS)
        assert merged.format_info["split"]["count"] == shards


def test_merged_rewrite_is_byte_identical_to_the_unsplit_write(tmp_path):
    bundle = small_bundle()
    gguf_container.write(bundle, tmp_path / "whole.gguf")
    gguf_container.write(bundle, tmp_path / "parts.gguf", split_max_tensors=2)
    bundler.open(tmp_path / "parts-00002-of-00003.gguf").save(tmp_path / "merged.gguf")
    assert (tmp_path / "merged.gguf").read_bytes() == (tmp_path / "whole.gguf").read_bytes()


def test_split_set_with_custom_alignment_repeats_it_in_every_shard(tmp_path):
    bundle = small_bundle()
    bundle.metadata.set("general.alignment", 128, ValueType.UINT32)
    gguf_container.write(bundle, tmp_path / "m.gguf", split_max_tensors=3)
    later = gguf.GGUFReader(tmp_path / "m-00002-of-00002.gguf")
    assert later.fields["general.alignment"].contents() == 128
    assert all(int(t.data_offset) % 128 == 0 for t in later.tensors)
    _same(bundle, bundler.open(tmp_path / "m-00001-of-00002.gguf"))


def test_split_that_fits_one_shard_writes_the_plain_file(tmp_path):
    gguf_container.write(small_bundle(), tmp_path / "m.gguf", split_max_tensors=100)
    assert [p.name for p in tmp_path.iterdir()] == ["m.gguf"]
    assert "split.count" not in gguf.GGUFReader(tmp_path / "m.gguf").fields


def test_bundler_reads_a_split_set_gguf_writer_wrote(tmp_path):
    bundle = small_bundle()
    writer = gguf.GGUFWriter(tmp_path / "ref.gguf", arch="llama", split_max_tensors=2)
    for key, v in bundle.metadata.typed_items():
        if key == "general.architecture":
            continue
        if v.type == ValueType.ARRAY:
            items = v.value.tolist() if hasattr(v.value, "tolist") else v.value
            writer.add_key_value(key, items, v.type, sub_type=gguf.GGUFValueType(v.item_type))
        else:
            writer.add_key_value(key, v.value, gguf.GGUFValueType(v.type))
    for t in bundle.tensors.values():
        raw = t.raw().reshape(t.codec.encoded_shape(t.shape))
        if t.codec.facts.is_block:
            qtype = gguf.GGMLQuantizationType(t.codec.facts.ggml_id)
            writer.add_tensor(t.name, raw, raw_dtype=qtype)
        else:
            writer.add_tensor(t.name, t.raw().view(t.codec.facts.numpy_dtype).reshape(t.shape))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    _same(bundle, bundler.open(tmp_path / "ref-00001-of-00003.gguf"))


def _shards(tmp_path):
    gguf_container.write(small_bundle(), tmp_path / "m.gguf", split_max_tensors=2)
    return sorted(tmp_path.glob("m-*.gguf"))


def test_missing_shard_is_a_format_error(tmp_path):
    paths = _shards(tmp_path)
    paths[1].unlink()
    with pytest.raises(FormatError, match="shard 2 of 3 is missing"):
        bundler.open(paths[0])


def test_shard_renamed_out_of_order_is_a_format_error(tmp_path):
    paths = _shards(tmp_path)
    a, b = paths[1].read_bytes(), paths[2].read_bytes()
    paths[1].write_bytes(b)
    paths[2].write_bytes(a)
    with pytest.raises(FormatError, match=r"says split\.no=2"):
        bundler.open(paths[0])


def test_later_shard_with_its_own_metadata_is_a_format_error(tmp_path):
    paths = _shards(tmp_path)
    # a later shard made by hand: split keys plus general.architecture
    writer = gguf.GGUFWriter(paths[2], arch="other")
    writer.add_uint16("split.no", 2)
    writer.add_uint16("split.count", 3)
    writer.add_int32("split.tensors.count", 5)
    writer.add_tensor("x", np.zeros(4, np.float32))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    with pytest.raises(FormatError, match="only the first shard carries metadata"):
        bundler.open(paths[0])


def test_split_count_that_disagrees_with_the_name_is_a_format_error(tmp_path):
    paths = _shards(tmp_path)
    renamed = tmp_path / "m-00001-of-00004.gguf"
    paths[0].rename(renamed)
    with pytest.raises(FormatError, match=r"split\.count is 3"):
        bundler.open(renamed)
