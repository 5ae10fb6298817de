"""The writer's canonical layout: byte-identical to the reference serializer."""

from __future__ import annotations

import json
import string

import ml_dtypes  # noqa: F401  (bfloat16 and float8 dtypes for numpy)
import numpy as np
import pytest
import safetensors
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from safetensors.numpy import save as reference_save

from bundler.bundle import Bundle, Metadata, Tensor
from bundler.codecs import TABLE
from bundler.containers import safetensors as stf
from bundler.containers.safetensors.schema import DTYPE_ORDER, PREFIX, PREFIX_COMPILED
from bundler.recipe import sha256_file
from tools.reference.assets import MINILM_SHA256

#: numpy dtypes `safetensors.numpy.save` writes, by SafeTensors dtype.
NUMPY_DTYPES = {
    f.safetensors_dtype: np.dtype(f.numpy_dtype)
    for f in TABLE
    if f.safetensors_dtype and f.numpy_dtype
}


def _write_bytes(bundle: Bundle, tmp_path, name="out.safetensors") -> bytes:
    out = tmp_path / name
    stf.write(bundle, out)
    return out.read_bytes()


@pytest.mark.realfile
def test_minilm_rewrite_is_byte_identical(minilm_safetensors, tmp_path):
    bundle = stf.read(minilm_safetensors)
    out = tmp_path / "model.safetensors"
    stf.write(bundle, out)
    assert sha256_file(out) == MINILM_SHA256


@pytest.mark.realfile
def test_minilm_read_gives_header_order_and_string_metadata(minilm_safetensors):
    bundle = stf.read(minilm_safetensors)
    assert dict(bundle.metadata) == {"format": "pt"}
    assert len(bundle.tensors) == 104
    codecs = [t.codec.name for t in bundle.tensors.values()]
    assert codecs.count("f32") == 103 and codecs.count("i64") == 1
    first = next(iter(bundle.tensors.values()))
    assert (first.name, first.shape) == ("embeddings.position_ids", (1, 512))
    assert first.source.offset == 8 + 11408


def test_dtype_order_is_the_reference_writers_order(tmp_path):
    """Every dtype the binding can serialize, one tensor each: the reference lays them out in
    DTYPE_ORDER descending (names chosen so that name order would say otherwise)."""
    buf = np.zeros(16, np.uint8)
    specs = {}
    for dtype, np_dtype in NUMPY_DTYPES.items():
        name = np_dtype.name
        specs[f"t{DTYPE_ORDER.index(dtype):02d}"] = safetensors.TensorSpec(
            dtype=name, shape=[1], data_ptr=buf.ctypes.data, data_len=np_dtype.itemsize
        )
    specs["t01"] = safetensors.TensorSpec(
        dtype="float4_e2m1fn_x2", shape=[1], data_ptr=buf.ctypes.data, data_len=1
    )
    data = bytes(safetensors.serialize(specs, None))
    n = int.from_bytes(data[:8], "little")
    order = [json.loads(data[8 : 8 + n])[k]["dtype"] for k in json.loads(data[8 : 8 + n])]
    expected = [d for d in reversed(DTYPE_ORDER) if d in NUMPY_DTYPES or d == "F4"]
    assert order == expected


def test_dtype_order_names_exactly_the_safetensors_dtypes_of_the_codec_table():
    assert sorted(DTYPE_ORDER) == sorted(f.safetensors_dtype for f in TABLE if f.safetensors_dtype)


@pytest.mark.parametrize(
    ("metadata", "expected"),
    [
        (None, b"\x08\x00\x00\x00\x00\x00\x00\x00{}      "),
        ({"k": "v"}, b'\x20\x00\x00\x00\x00\x00\x00\x00{"__metadata__":{"k":"v"}}      '),
    ],
)
def test_empty_bundle_golden_bytes(metadata, expected, tmp_path):
    assert reference_save({}, metadata=metadata) == expected
    assert _write_bytes(Bundle(Metadata(metadata or {})), tmp_path) == expected


def test_no_tensors_and_empty_metadata_object_is_valid_json_unlike_the_reference(tmp_path):
    """safetensors 0.8.0 writes `{},"__metadata__":{}}` here, which it cannot read back;
    this is the one input where the writers differ (formats/safetensors.md)."""
    assert reference_save({}, metadata={})[8:11] == b"{},"
    bundle = Bundle(format="safetensors", format_info={"metadata_object": True})
    data = _write_bytes(bundle, tmp_path)
    assert data == b'\x18\x00\x00\x00\x00\x00\x00\x00{"__metadata__":{}}     '
    assert safetensors.deserialize(data) == []


def test_golden_layout_of_mixed_dtypes(tmp_path):
    """Largest dtype first, then by name; each entry's keys dtype, shape, data_offsets;
    0-dim and empty tensors; spaces up to a multiple of 8."""
    bundle = Bundle(
        {"format": "pt"},
        [
            Tensor.from_array("a", np.arange(3, dtype=np.int64)),
            Tensor.from_array("b", np.arange(2, dtype=np.float32)),
            Tensor.from_array("e", np.zeros((0, 3), np.float16)),
            Tensor.from_array("c", np.array(7, dtype=np.uint8)),
        ],
    )
    data = _write_bytes(bundle, tmp_path)
    header = (
        b'{"__metadata__":{"format":"pt"},'
        b'"a":{"dtype":"I64","shape":[3],"data_offsets":[0,24]},'
        b'"b":{"dtype":"F32","shape":[2],"data_offsets":[24,32]},'
        b'"e":{"dtype":"F16","shape":[0,3],"data_offsets":[32,32]},'
        b'"c":{"dtype":"U8","shape":[],"data_offsets":[32,33]}}'
    )
    header += b" " * (-len(header) % 8)
    body = np.arange(3, dtype="<i8").tobytes() + np.arange(2, dtype="<f4").tobytes() + b"\x07"
    assert data == len(header).to_bytes(8, "little") + header + body
    arrays = {t.name: t.source.array for t in bundle.tensors.values()}
    assert data == reference_save(arrays, metadata={"format": "pt"})


def test_non_ascii_and_control_characters_are_written_as_the_reference_does(tmp_path):
    names = ["é", 'a"b', "tab\tnew\nline\x01\x7f", "/slash", "\u2028", "back\\slash"]
    arrays = {n: np.arange(i + 1, dtype=np.uint8) for i, n in enumerate(names)}
    for md in ({"k": "\\"}, {"ü": "ö\x00\x1f\x08\x0c"}):
        ours = _write_bytes(Bundle(md, _canonical(arrays)), tmp_path)
        assert ours == reference_save(arrays, metadata=md)


@pytest.mark.realfile
def test_prefix_schema_compiled_and_interpreted_agree(minilm_safetensors):
    head = minilm_safetensors.read_bytes()[:8]
    assert PREFIX.parse(head) == PREFIX_COMPILED.parse(head)
    assert PREFIX_COMPILED.build({"header_size": 11408}) == PREFIX.build({"header_size": 11408})
    assert PREFIX_COMPILED.parse(head).header_size == 11408


def _canonical(arrays: dict[str, np.ndarray]) -> list[Tensor]:
    """Tensors holding the arrays' bytes as they are, in the order the writer lays them out
    (so the bundle is plain)."""
    from bundler.bundle import codec_for_dtype
    from bundler.containers.safetensors.schema import layout_key

    tensors = [
        Tensor.from_raw(n, a.shape, codec_for_dtype(a.dtype), a.reshape(-1).view(np.uint8))
        for n, a in arrays.items()
    ]
    return sorted(tensors, key=lambda t: layout_key(t.name, t.codec.facts.safetensors_dtype or ""))


def _metadata_order(data: bytes) -> list[str]:
    """The reference's `__metadata__` key order (a Rust HashMap: differs from run to run)."""
    n = int.from_bytes(data[:8], "little")
    return list(json.loads(data[8 : 8 + n]).get("__metadata__", {}))


_names = st.text(
    alphabet=st.characters(blacklist_categories=("Cs",)), min_size=1, max_size=12
).filter(lambda s: s != "__metadata__")
_shapes = st.lists(st.integers(0, 4), min_size=0, max_size=3).map(tuple)


@st.composite
def _arrays(draw):
    names = draw(st.lists(_names, min_size=0, max_size=6, unique=True))
    out = {}
    for name in names:
        dtype = NUMPY_DTYPES[draw(st.sampled_from(sorted(NUMPY_DTYPES)))]
        shape = draw(_shapes)
        n = int(np.prod(shape)) * dtype.itemsize
        raw = draw(st.binary(min_size=n, max_size=n))
        out[name] = np.frombuffer(raw, np.uint8).view(dtype).reshape(shape)
    return out


_metadata = st.none() | st.dictionaries(
    st.text(string.printable + "éü€", max_size=8), st.text(max_size=8), max_size=4
).filter(lambda d: not any("\ud800" <= c <= "\udfff" for s in d.values() for c in s))


@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(arrays=_arrays(), metadata=_metadata)
def test_output_equals_reference_save_for_any_arrays(arrays, metadata, tmp_path_factory):
    if not arrays and metadata == {}:
        metadata = None  # the reference's invalid output, pinned above
    ref = reference_save(arrays, metadata=metadata)
    tmp = tmp_path_factory.mktemp("prop")
    # our reader takes the reference file; writing it back gives the same bytes
    (tmp / "ref.safetensors").write_bytes(ref)
    assert _write_bytes(stf.read(tmp / "ref.safetensors"), tmp) == ref
    # a bundle built from the arrays, metadata in the order the reference happened to use
    md = Metadata((k, metadata[k]) for k in _metadata_order(ref)) if metadata else Metadata()
    info = {"metadata_object": metadata is not None}
    bundle = Bundle(md, _canonical(arrays), format="safetensors", format_info=info)
    assert _write_bytes(bundle, tmp) == ref


@pytest.mark.realfile
def test_bundler_open_finds_safetensors_by_its_first_bytes(minilm_safetensors, tmp_path):
    import bundler
    from bundler.containers import detect

    renamed = tmp_path / "weights.bin"
    renamed.write_bytes(minilm_safetensors.read_bytes())
    assert detect(renamed) == "safetensors"
    bundle = bundler.open(renamed)
    assert bundle.format == "safetensors" and len(bundle.tensors) == 104
