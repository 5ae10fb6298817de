"""APR v2 writing and reading: layout invariants, round trips, identical rewrites, metadata."""

from __future__ import annotations

import json
import struct
import warnings
import zlib

import numpy as np
import pytest
from apr_samples import (
    RawApr,
    assert_same_bundle,
    check_layout,
    entries_for,
    sample_bundle,
    typed_metadata,
)

from bundler.bundle import Bundle, BytesSource, Metadata, Tensor, ValueType
from bundler.codecs import get
from bundler.containers import apr, typed_json
from bundler.containers.apr import schema as apr_schema
from bundler.errors import AprCompatibilityWarning, UsageError


def _write(bundle: Bundle, path, **options) -> bytes:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", AprCompatibilityWarning)
        apr.write(bundle, path, **options)
    return path.read_bytes()


@pytest.fixture
def sample_file(tmp_path):
    path = tmp_path / "sample.apr"
    _write(sample_bundle(), path)
    return path


def _bundles():
    md = typed_metadata()
    x = np.linspace(-1, 1, 64, dtype=np.float32).reshape(2, 32)
    return {
        "sample": sample_bundle(),
        "empty": Bundle(),
        "metadata only": Bundle(md),
        "one scalar": Bundle(Metadata(), [Tensor.from_array("s", np.float32(3.5))]),
        "zero-size tensor": Bundle(Metadata(), [Tensor.from_array("z", np.zeros((0, 4)))]),
        "apr codecs": Bundle(
            md, [Tensor.from_array("q8", x, "apr_q8"), Tensor.from_array("q4", x, "apr_q4")]
        ),
        "unicode names": Bundle(
            Metadata(),
            [Tensor.from_array(n, x) for n in ("zz", "é", "a.b", "A", "\u4e2d")],
        ),
    }


@pytest.mark.parametrize("name", list(_bundles()))
def test_every_file_written_has_correct_crcs_sorted_index_and_alignment(tmp_path, name):
    bundle = _bundles()[name]
    data = _write(bundle, tmp_path / "x.apr")
    tensors = check_layout(data)
    assert sorted(n for n, _, _ in tensors) == sorted(bundle.tensors)


@pytest.mark.parametrize("name", list(_bundles()))
def test_written_bundle_reads_back_equal(tmp_path, name):
    bundle = _bundles()[name]
    _write(bundle, tmp_path / "x.apr")
    assert_same_bundle(apr.read(tmp_path / "x.apr"), bundle)


@pytest.mark.parametrize("name", list(_bundles()))
def test_rewrite_is_byte_identical(tmp_path, name):
    first = _write(_bundles()[name], tmp_path / "a.apr")
    second = _write(apr.read(tmp_path / "a.apr"), tmp_path / "b.apr")
    assert first == second


def test_tensor_order_follows_data_offsets_not_the_sorted_index(sample_file):
    bundle = apr.read(sample_file)
    assert list(bundle.tensors) == list(sample_bundle().tensors)
    names = [n for n, _, _ in check_layout(sample_file.read_bytes())]
    assert names == sorted(names) != list(bundle.tensors)


def test_data_is_written_in_bundle_order(sample_file):
    offsets = {n: off for n, off, _ in check_layout(sample_file.read_bytes())}
    order = sorted(offsets, key=offsets.get)
    assert order == list(sample_bundle().tensors)


def test_tensors_are_file_sources_at_their_payload(sample_file):
    data = sample_file.read_bytes()
    layout = {n: (off, size) for n, off, size in check_layout(data)}
    for name, t in apr.read(sample_file).tensors.items():
        off, size = layout[name]
        assert (t.source.offset, t.source.nbytes) == (off, size)
        assert t.raw().tobytes() == data[off : off + size]


def test_decoded_values_survive_the_file(sample_file):
    want = sample_bundle()
    got = apr.read(sample_file)
    for name in ("output_norm.weight", "blk.0.attn_norm.weight", "blk.0.apr4", "a.apr8"):
        np.testing.assert_array_equal(got.tensors[name].numpy(), want.tensors[name].numpy())


def test_plain_file_has_flags_row_major_only(sample_file):
    data = sample_file.read_bytes()
    assert struct.unpack_from("<H", data, 6)[0] == 0x0400
    assert apr.read(sample_file).format_info["flags"] == 0x0400


def test_flags_read_are_kept_on_rewrite(tmp_path):
    flags = 0x0400 | 0x0020 | 0x0200 | 0x0010
    raw = RawApr(flags=flags).build()
    (tmp_path / "f.apr").write_bytes(raw)
    bundle = apr.read(tmp_path / "f.apr")
    assert bundle.format_info["flags"] == flags
    data = _write(bundle, tmp_path / "g.apr")
    assert struct.unpack_from("<H", data, 6)[0] == flags
    assert data == raw


def test_flags_of_a_bundle_from_another_format_are_not_copied(tmp_path):
    bundle = Bundle(format="gguf", format_info={"flags": 0x0020})
    data = _write(bundle, tmp_path / "x.apr")
    assert struct.unpack_from("<H", data, 6)[0] == 0x0400


# ------------------------------------------------------------------- metadata convention


def _metadata_json(data: bytes) -> str:
    size = struct.unpack_from("<I", data, 20)[0]
    return data[64 : 64 + size].decode()


def test_metadata_has_aprender_fields_in_order_then_the_typed_metadata(sample_file):
    text = _metadata_json(sample_file.read_bytes())
    obj = json.loads(text)
    assert list(obj) == [
        "model_type",
        "name",
        "license",
        "data_source",
        "data_license",
        "total_size",
        "param_count",
        "bundler.metadata",
    ]
    bundle = sample_bundle()
    assert obj["model_type"] == "llama"
    assert obj["name"] == "sample ünïcode"
    assert obj["license"] is obj["data_source"] is obj["data_license"] is None
    assert obj["total_size"] == sum(t.nbytes for t in bundle.tensors.values())
    assert obj["param_count"] == sum(t.n_values for t in bundle.tensors.values())
    assert json.dumps(obj["bundler.metadata"], separators=(",", ":"), ensure_ascii=False) == (
        typed_json.dumps(bundle.metadata)
    )
    assert ", " not in text[:60] and not text.endswith("\n")


def test_model_type_defaults_to_custom_and_name_is_omitted(tmp_path):
    obj = json.loads(_metadata_json(_write(Bundle({"k": "v"}), tmp_path / "x.apr")))
    assert obj["model_type"] == "custom"
    assert "name" not in obj


def test_bundler_metadata_is_the_whole_metadata_when_present(tmp_path):
    meta = b'{"model_type":"llama","total_size":5,"bundler.metadata":[["only","STRING","me"]]}'
    (tmp_path / "x.apr").write_bytes(RawApr(metadata=meta).build())
    md = apr.read(tmp_path / "x.apr").metadata
    assert list(md) == ["only"] and md["only"] == "me"


def test_file_aprender_wrote_gets_inferred_types_in_file_order(tmp_path):
    meta = (
        b'{"model_type":"qwen2","name":"m","description":null,"total_size":10,'
        b'"param_count":18446744073709551615,"rope_theta":1000000.0,"flag":false,'
        b'"tokenizer.vocabulary":["a","b"],"ids":[1,2,3],"mixed":[1,2.5],'
        b'"quantization":{"quant_type":"int4","bits":4},"odd":[1,"a"],"big":-99999999999999999999}'
    )
    (tmp_path / "x.apr").write_bytes(RawApr(metadata=meta).build())
    md = apr.read(tmp_path / "x.apr").metadata
    assert list(md) == [
        "model_type",
        "name",
        "total_size",
        "param_count",
        "rope_theta",
        "flag",
        "tokenizer.vocabulary",
        "ids",
        "mixed",
        "quantization",
        "odd",
        "big",
    ]
    t = {k: md.typed(k) for k in md}
    assert t["model_type"].type == ValueType.STRING
    assert t["total_size"].type == ValueType.INT64
    assert t["param_count"].type == ValueType.UINT64
    assert t["rope_theta"].type == ValueType.FLOAT64 and md["rope_theta"] == 1e6
    assert t["flag"].type == ValueType.BOOL
    assert (t["tokenizer.vocabulary"].item_type, md["tokenizer.vocabulary"]) == (
        ValueType.STRING,
        ["a", "b"],
    )
    assert t["ids"].item_type == ValueType.INT64 and md["ids"] == [1, 2, 3]
    assert t["mixed"].item_type == ValueType.FLOAT64 and md["mixed"] == [1.0, 2.5]
    assert md["quantization"] == '{"quant_type":"int4","bits":4}'
    assert md["odd"] == '[1,"a"]'
    assert md["big"] == "-99999999999999999999"


def test_file_aprender_wrote_rewrites_byte_identical(tmp_path):
    x = np.arange(8, dtype=np.float32)
    entries, payloads = entries_for([("w", 0, [8], x.tobytes()), ("b", 0, [2], x[:2].tobytes())])
    meta = b'{"model_type":"custom","license":null,"total_size":40,"param_count":10}'
    raw = RawApr(metadata=meta, entries=entries, payloads=payloads).build()
    (tmp_path / "a.apr").write_bytes(raw)
    bundle = apr.read(tmp_path / "a.apr")
    assert list(bundle.tensors) == ["w", "b"]
    assert _write(bundle, tmp_path / "b.apr") == raw


def test_changed_metadata_of_an_aprender_file_is_written_fresh(tmp_path):
    (tmp_path / "a.apr").write_bytes(RawApr(metadata=b'{"model_type":"custom"}').build())
    bundle = apr.read(tmp_path / "a.apr")
    bundle.metadata["added"] = "yes"
    _write(bundle, tmp_path / "b.apr")
    again = apr.read(tmp_path / "b.apr")
    assert again.metadata == bundle.metadata
    assert "bundler.metadata" in _metadata_json((tmp_path / "b.apr").read_bytes())


def test_legacy_apr_codes_read_as_apr_codecs(tmp_path):
    x = np.linspace(-1, 1, 40, dtype=np.float32)
    q4 = get("apr_q4").encode(x).tobytes()
    q8 = get("apr_q8").encode(x).tobytes()
    entries, payloads = entries_for([("a", 8, [40], q4), ("b", 9, [40], q8)])
    (tmp_path / "old.apr").write_bytes(RawApr(entries=entries, payloads=payloads).build())
    bundle = apr.read(tmp_path / "old.apr")
    assert [t.codec.name for t in bundle.tensors.values()] == ["apr_q4", "apr_q8"]


# --------------------------------------------------------------- aprender compatibility


def test_extension_codes_warn_naming_tensors_and_codecs(tmp_path):
    with pytest.warns(AprCompatibilityWarning) as record:
        apr.write(sample_bundle(), tmp_path / "x.apr")
    message = str(record[0].message)
    assert "q4_0 (APR code 66): 'token_embd.weight'" in message
    assert "q8_0 (APR code 72): 'blk.0.ffn_up.weight'" in message
    assert "q4_k (APR" not in message and "f16" not in message  # aprender reads those


def test_native_codecs_write_without_warning(tmp_path):
    x = np.ones((2, 256), np.float32)
    tensors = [
        Tensor.from_array(n, x, c) for n, c in [("a", "f32"), ("b", "apr_q4"), ("c", "apr_q8")]
    ]
    tensors.append(Tensor.from_raw("d", (2, 256), "q6_k", bytes(2 * 210)))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        apr.write(Bundle(typed_metadata(), tensors), tmp_path / "x.apr", aprender=True)
    check_layout((tmp_path / "x.apr").read_bytes())


def test_aprender_mode_refuses_listing_every_foreign_tensor(tmp_path):
    with pytest.raises(UsageError) as err:
        apr.write(sample_bundle(), tmp_path / "x.apr", aprender=True)
    assert "'token_embd.weight'" in str(err.value) and "'blk.0.ffn_up.weight'" in str(err.value)
    assert not (tmp_path / "x.apr").exists()


@pytest.mark.parametrize("codec", ["q4_0", "q4_1", "q5_0", "q5_1", "q8_0", "q2_k", "q3_k", "q5_k"])
def test_ggml_types_aprender_lacks_get_code_64_plus_ggml_id(tmp_path, codec):
    c = get(codec)
    t = Tensor.from_raw("t", (1, c.facts.block_size), c, bytes(c.facts.type_size))
    data = _write(Bundle(tensors=[t]), tmp_path / "x.apr")
    index_at = struct.unpack_from("<Q", data, 24)[0]
    assert data[index_at + 2 + 1] == 64 + c.facts.ggml_id
    assert apr.read(tmp_path / "x.apr").tensors["t"].codec == c


def test_codec_without_apr_code_is_refused(tmp_path):
    t = Tensor.from_array("t", np.zeros(3, np.uint16))
    with pytest.raises(UsageError, match="no APR dtype code"):
        apr.write(Bundle(tensors=[t]), tmp_path / "x.apr")


@pytest.mark.parametrize(
    ("tensor", "match"),
    [
        (Tensor.from_array("n" * 257, np.zeros(1, np.float32)), "at most 256"),
        (Tensor.from_array("t", np.zeros((1,) * 9, np.float32)), "at most 8"),
    ],
)
def test_names_and_ranks_apr_cannot_hold_are_refused(tmp_path, tensor, match):
    with pytest.raises(UsageError, match=match):
        apr.write(Bundle(tensors=[tensor]), tmp_path / "x.apr")


def test_unknown_write_option_is_refused(tmp_path):
    with pytest.raises(UsageError, match="alignment"):
        apr.write(Bundle(), tmp_path / "x.apr", alignment=32)


def test_source_with_wrong_byte_count_fails_and_leaves_no_file(tmp_path):
    t = Tensor("t", (4,), "f32", BytesSource(b"\0" * 12))
    with pytest.raises(UsageError, match="needs 16"):
        apr.write(Bundle(tensors=[t]), tmp_path / "x.apr")
    assert list(tmp_path.iterdir()) == []


def test_header_and_entry_schemas_compiled_and_interpreted_agree(sample_file):
    data = sample_file.read_bytes()
    assert apr_schema.HEADER.parse(data[:64]) == apr_schema.HEADER_COMPILED.parse(data[:64])
    pos = struct.unpack_from("<Q", data, 24)[0]
    for _ in range(struct.unpack_from("<I", data, 8)[0]):
        a = apr_schema.INDEX_ENTRY.parse(data[pos:])
        b = apr_schema.INDEX_ENTRY_COMPILED.parse(data[pos:])
        assert a == b
        assert apr_schema.INDEX_ENTRY.build(a) == apr_schema.INDEX_ENTRY_COMPILED.build(b)
        pos += apr_schema.entry_size(a.name_len, a.ndim)


def test_crc32_is_the_ieee_one():
    assert zlib.crc32(b"123456789") == 0xCBF43926
    assert apr.header_crc(bytes(64)) == zlib.crc32(bytes(60))


# ------------------------------------------------------------------- API and streaming


def test_open_and_save_dispatch_to_apr_by_magic_and_extension(tmp_path):
    import bundler

    bundle = sample_bundle()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", AprCompatibilityWarning)
        bundle.save(tmp_path / "x.apr")
    got = bundler.open(tmp_path / "x.apr")
    assert got.format == "apr"
    assert_same_bundle(got, bundle)


def test_old_magic_is_detected_as_apr_and_refused(tmp_path):
    from bundler.containers import open_bundle
    from bundler.errors import UnsupportedFormatError

    (tmp_path / "v1.bin").write_bytes(b"APRN" + bytes(100))
    with pytest.raises(UnsupportedFormatError, match="APR v1"):
        open_bundle(tmp_path / "v1.bin")


def test_rewrite_in_place_reads_the_old_file_while_writing(sample_file):
    before = sample_file.read_bytes()
    _write(apr.read(sample_file), sample_file)
    assert sample_file.read_bytes() == before


def test_rewrite_memory_does_not_grow_with_the_tensor(tmp_path):
    import tracemalloc

    big = np.random.default_rng(1).integers(0, 256, 48 << 20, dtype=np.uint8)
    entries, payloads = entries_for([("big", 7, [big.size], big.tobytes())])
    (tmp_path / "big.apr").write_bytes(RawApr(entries=entries, payloads=payloads).build())
    del big, payloads
    bundle = apr.read(tmp_path / "big.apr", verify_footer=False)
    tracemalloc.start()
    try:
        apr.write(bundle, tmp_path / "copy.apr")
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 12 << 20, f"rewriting a 48 MiB tensor took {peak:,} bytes"
    assert apr.read(tmp_path / "copy.apr").tensors["big"].nbytes == 48 << 20


@pytest.mark.parametrize(
    "order",
    [["e", "a", "b"], ["a", "e", "b"], ["b", "a", "e"], ["e"], ["a", "e", "b", "f"]],
)
def test_zero_size_tensors_keep_their_place(tmp_path, order):
    arrays = {"a": np.ones(3, np.float32), "b": np.zeros(70, np.float32)}
    tensors = [Tensor.from_array(n, arrays.get(n, np.zeros(0, np.float32))) for n in order]
    bundle = Bundle(Metadata(), tensors)
    data = _write(bundle, tmp_path / "x.apr")
    check_layout(data)
    assert_same_bundle(apr.read(tmp_path / "x.apr"), bundle)


def test_adjacent_zero_size_tensors_read_back_in_name_order(tmp_path):
    empty = np.zeros(0, np.float32)
    tensors = [Tensor.from_array(n, empty) for n in ("z", "y")]
    tensors.append(Tensor.from_array("a", np.ones(2, np.float32)))
    _write(Bundle(Metadata(), tensors), tmp_path / "x.apr")
    assert list(apr.read(tmp_path / "x.apr").tensors) == ["y", "z", "a"]
