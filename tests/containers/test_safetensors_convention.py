"""Typed metadata, block codecs and tensor order through SafeTensors: the convention of
formats/safetensors.md round trips every bundle, and refuses inconsistent keys."""

from __future__ import annotations

import json

import numpy as np
import pytest
from gguf import GGMLQuantizationType
from gguf.quants import quantize
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from safetensors import safe_open
from safetensors.numpy import save as reference_save

from bundler.bundle import Bundle, Metadata, Tensor, Value, ValueType
from bundler.codecs import TABLE, get
from bundler.containers import safetensors as stf
from bundler.errors import FormatError

META, TENSORS = "bundler.metadata", "bundler.tensors"


def _typed_metadata() -> Metadata:
    md = Metadata()
    md["general.architecture"] = "llama"
    md.set("general.alignment", 32, ValueType.UINT32)
    md.set("llama.block_count", 2, ValueType.UINT64)
    md.set("small", -3, ValueType.INT8)
    md.set("u8", 255, ValueType.UINT8)
    md.set("i16", -300, ValueType.INT16)
    md.set("u16", 60000, ValueType.UINT16)
    md.set("i64", -(2**62), ValueType.INT64)
    md.set("rope.freq_base", 10000.5, ValueType.FLOAT32)
    md.set("eps", 1e-300, ValueType.FLOAT64)
    md.set("not_a_number", float("nan"), ValueType.FLOAT32)
    md.set("flag", True, ValueType.BOOL)
    md.set("tokens", ["<s>", "</s>", "héllo", ""], ValueType.ARRAY, ValueType.STRING)
    md.set("scores", np.array([0.5, -1.0], np.float32), ValueType.ARRAY, ValueType.FLOAT32)
    md.set("ids", np.array([1, 2, 3], np.int32), ValueType.ARRAY, ValueType.INT32)
    md.set(
        "nested",
        [Value(ValueType.ARRAY, np.array([1, 2], np.uint8), ValueType.UINT8)],
        ValueType.ARRAY,
        ValueType.ARRAY,
    )
    md["general.name"] = "tiny"
    return md


def _block_tensor(name: str, qtype: GGMLQuantizationType, shape: tuple[int, ...]) -> Tensor:
    x = np.sin(np.arange(np.prod(shape), dtype=np.float32)).reshape(shape)
    return Tensor.from_raw(name, shape, qtype.name.lower(), quantize(x, qtype))


def _typed_bundle() -> Bundle:
    return Bundle(
        _typed_metadata(),
        [
            Tensor.from_array("token_embd.weight", np.ones((3, 8), np.float32)),
            _block_tensor("blk.0.attn_q.weight", GGMLQuantizationType.Q4_0, (4, 64)),
            _block_tensor("blk.0.ffn_up.weight", GGMLQuantizationType.Q8_0, (2, 3, 32)),
            Tensor.from_array("blk.0.attn_norm.weight", np.arange(8, dtype=np.float32)),
            _block_tensor("output.weight", GGMLQuantizationType.Q8_0, (32,)),
        ],
    )


def _assert_same_bundle(a: Bundle, b: Bundle) -> None:
    assert a.metadata == b.metadata
    assert [k for k, _ in a.metadata.typed_items()] == [k for k, _ in b.metadata.typed_items()]
    assert [(t.name, t.codec, t.shape) for t in a.tensors.values()] == [
        (t.name, t.codec, t.shape) for t in b.tensors.values()
    ]
    for name, t in a.tensors.items():
        assert t.raw().tobytes() == b.tensors[name].raw().tobytes(), name


def test_typed_bundle_with_block_tensors_round_trips(tmp_path):
    bundle = _typed_bundle()
    first = tmp_path / "a.safetensors"
    stf.write(bundle, first)
    back = stf.read(first)
    _assert_same_bundle(bundle, back)
    again = tmp_path / "b.safetensors"
    stf.write(back, again)
    assert again.read_bytes() == first.read_bytes()


def test_block_tensors_are_u8_rows_and_string_metadata_stays_readable(tmp_path):
    out = tmp_path / "a.safetensors"
    stf.write(_typed_bundle(), out)
    with safe_open(str(out), framework="numpy") as f:
        md = f.metadata()
        assert f.get_slice("blk.0.attn_q.weight").get_dtype() == "U8"
        assert f.get_slice("blk.0.attn_q.weight").get_shape() == [4, 36]
        assert f.get_slice("blk.0.ffn_up.weight").get_shape() == [2, 3, 34]
        assert f.get_slice("output.weight").get_shape() == [34]
    assert md["general.architecture"] == "llama" and md["general.name"] == "tiny"
    data = out.read_bytes()
    header = json.loads(data[8 : 8 + int.from_bytes(data[:8], "little")])
    assert list(header) == [
        "__metadata__",
        "blk.0.attn_norm.weight",
        "token_embd.weight",
        "blk.0.attn_q.weight",
        "blk.0.ffn_up.weight",
        "output.weight",
    ]
    assert list(header["__metadata__"]) == ["general.architecture", "general.name", META, TENSORS]
    assert json.loads(md[TENSORS])[1] == ["blk.0.attn_q.weight", "q4_0", [4, 64]]
    assert json.loads(md[META])[1] == ["general.alignment", "UINT32", 32]


BLOCK_CODECS = [f.name for f in TABLE if not f.safetensors_dtype]


@pytest.mark.parametrize("codec", BLOCK_CODECS)
def test_every_codec_safetensors_lacks_round_trips_as_u8(codec, tmp_path):
    facts = get(codec).facts
    shape = (3, 2 * facts.block_size) if not facts.flat else (5, 40)
    raw = np.random.default_rng(1).integers(0, 256, facts.nbytes(shape), dtype=np.uint8)
    bundle = Bundle({"k": "v"}, [Tensor.from_raw("w", shape, codec, raw)])
    out = tmp_path / "x.safetensors"
    stf.write(bundle, out)
    _assert_same_bundle(bundle, stf.read(out))


def test_plain_bundle_gets_no_bundler_keys(tmp_path):
    bundle = Bundle(
        {"format": "pt", "b": "2"},
        [
            Tensor.from_array("x", np.ones(2, np.float64)),
            Tensor.from_array("a", np.ones(2, np.float32)),
            Tensor.from_array("b", np.ones(2, np.float32)),
        ],
    )
    out = tmp_path / "plain.safetensors"
    stf.write(bundle, out)
    with safe_open(str(out), framework="numpy") as f:
        assert f.metadata() == {"format": "pt", "b": "2"}
    _assert_same_bundle(bundle, stf.read(out))


@pytest.mark.parametrize(
    "change",
    ["tensor order", "typed value", "reserved key"],
)
def test_a_bundle_that_is_not_plain_keeps_order_and_types(change, tmp_path):
    tensors = [Tensor.from_array(n, np.ones(2, np.float32)) for n in ("a", "b")]
    md = Metadata({"format": "pt"})
    if change == "tensor order":
        tensors.reverse()
    elif change == "typed value":
        md["count"] = 3
    else:
        md[TENSORS] = "a string that looks like ours"
    bundle = Bundle(md, tensors)
    out = tmp_path / "x.safetensors"
    stf.write(bundle, out)
    with safe_open(str(out), framework="numpy") as f:
        assert META in f.metadata()
    _assert_same_bundle(bundle, stf.read(out))


def _file(tmp_path, metadata: dict[str, str], arrays=None):
    arrays = arrays if arrays is not None else {"w": np.zeros((4, 36), np.uint8)}
    path = tmp_path / "bad.safetensors"
    path.write_bytes(reference_save(arrays, metadata=metadata))
    return path


GOOD_TENSORS = '[["w","q4_0",[4,64]]]'
GOOD_META = '[["k","STRING","v"]]'


@pytest.mark.parametrize(
    ("metadata", "problem"),
    [
        ({TENSORS: GOOD_TENSORS}, "has 'bundler.tensors' but not 'bundler.metadata'"),
        ({META: GOOD_META}, "has 'bundler.metadata' but not 'bundler.tensors'"),
        ({META: GOOD_META, TENSORS: '[["w","q9_9",[4,64]]]'}, "unknown codec 'q9_9'"),
        ({META: GOOD_META, TENSORS: '[["w","Q4_0",[4,64]]]'}, "codec names are lower case"),
        ({META: GOOD_META, TENSORS: '[["w","q4_0",[4,96]]]'}, "the file holds U8 [4, 36]"),
        ({META: GOOD_META, TENSORS: '[["w","q4_0",[4,63]]]'}, "multiple of 32"),
        ({META: GOOD_META, TENSORS: '[["w","u8",[4,35]]]'}, "stored as U8 [4, 35]"),
        ({META: GOOD_META, TENSORS: '[["w","f32",[4,9]]]'}, "the file holds U8"),
        ({META: GOOD_META, TENSORS: "[]"}, "['w'] of the file are not listed"),
        ({META: GOOD_META, TENSORS: '[["w","q4_0",[4,64]],["w","q4_0",[4,64]]]'}, "twice"),
        ({META: GOOD_META, TENSORS: '[["v","q4_0",[4,64]]]'}, "'v' is not in the file"),
        ({META: GOOD_META, TENSORS: "{"}, "not JSON"),
        ({META: GOOD_META, TENSORS: '{"w":1}'}, "JSON array"),
        ({META: GOOD_META, TENSORS: '[["w","q4_0",[4,-64]]]'}, "entry 0 is not"),
        ({META: GOOD_META, TENSORS: '[["w","q4_0",[4,true]]]'}, "entry 0 is not"),
        ({META: GOOD_META, TENSORS: '[["w","q4_0",[4,1e9999]]]'}, "entry 0 is not"),
        ({META: GOOD_META, TENSORS: '[["w","q4_0",[4294967296,4294967296,32]]]'}, "64-bit"),
        ({META: '[["k","UINT8",300]]', TENSORS: GOOD_TENSORS}, "bad typed metadata"),
        ({META: "[[", TENSORS: GOOD_TENSORS}, "bad typed metadata"),
        ({META: '[["k","STRING","v"],["k","STRING","v"]]', TENSORS: GOOD_TENSORS}, "duplicate"),
    ],
)
def test_inconsistent_convention_keys_are_format_errors(metadata, problem, tmp_path):
    path = _file(tmp_path, metadata)
    with pytest.raises(FormatError) as err:
        stf.read(path)
    assert err.value.path == str(path)
    assert err.value.offset is not None and 8 <= err.value.offset < 8 + 400
    assert problem in err.value.problem


def test_convention_keys_as_written_are_accepted(tmp_path):
    path = _file(tmp_path, {META: GOOD_META, TENSORS: GOOD_TENSORS})
    t = stf.read(path).tensors["w"]
    assert (t.codec.name, t.shape, t.nbytes) == ("q4_0", (4, 64), 144)


_VALUE_TYPES = [t for t in ValueType if t not in (ValueType.ARRAY,)]


@st.composite
def _typed_value(draw):
    t = draw(st.sampled_from([*_VALUE_TYPES, ValueType.ARRAY]))
    if t == ValueType.STRING:
        return Value(t, draw(st.text(max_size=6)))
    if t == ValueType.BOOL:
        return Value(t, draw(st.booleans()))
    if t in (ValueType.FLOAT32, ValueType.FLOAT64):
        width = 32 if t == ValueType.FLOAT32 else 64
        # typed JSON keeps NaN as "nan": the quiet NaN, not other payloads or signs
        return Value(t, draw(st.floats(width=width, allow_nan=False) | st.just(float("nan"))))
    if t == ValueType.ARRAY:
        item = draw(st.sampled_from([ValueType.STRING, ValueType.INT16, ValueType.FLOAT64]))
        if item == ValueType.STRING:
            return Value(t, draw(st.lists(st.text(max_size=3), max_size=3)), item)
        values = draw(st.lists(st.integers(-(2**15), 2**15 - 1), max_size=3))
        return Value(t, np.array(values, item.numpy_dtype), item)
    info = np.iinfo(t.numpy_dtype)
    return Value(t, draw(st.integers(int(info.min), int(info.max))))


@st.composite
def _bundles(draw):
    md = Metadata()
    for key in draw(st.lists(st.text(min_size=1, max_size=8), max_size=5, unique=True)):
        md[key] = draw(_typed_value())
    tensors = []
    for i, codec in enumerate(draw(st.lists(st.sampled_from(sorted(_CODECS)), max_size=5))):
        facts = get(codec).facts
        rows = draw(st.integers(0, 3))
        shape = (rows, facts.block_size * draw(st.integers(1, 2)))
        if facts.flat:
            shape = (rows * 8,)
        raw = draw(st.binary(min_size=facts.nbytes(shape), max_size=facts.nbytes(shape)))
        tensors.append(Tensor.from_raw(f"t{i}.{codec}", shape, codec, raw))
    return Bundle(md, draw(st.permutations(tensors)))


_CODECS = [f.name for f in TABLE]


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(bundle=_bundles())
def test_any_bundle_round_trips_exactly(bundle, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("any")
    stf.write(bundle, tmp / "a.safetensors")
    back = stf.read(tmp / "a.safetensors")
    _assert_same_bundle(bundle, back)
    stf.write(back, tmp / "b.safetensors")
    assert (tmp / "b.safetensors").read_bytes() == (tmp / "a.safetensors").read_bytes()
