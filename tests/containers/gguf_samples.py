"""Sample GGUF bundles and the oracles GGUF tests check files against: bundler's own
llama.cpp rule checker, llama.cpp's C reader (when the C library is built) and `gguf`'s
GGUFReader."""

from __future__ import annotations

import ctypes
import functools
import os

import gguf
import numpy as np
import pytest
from gguf import GGMLQuantizationType as Q

from bundler.bundle import Bundle, Metadata, Tensor, Value, ValueType
from bundler.codecs.byteorder import swapped
from bundler.containers.gguf.rules import check_llama_rules


def quantized(name: str, codec: str, shape: tuple[int, ...], seed: int = 0) -> Tensor:
    """A tensor of `codec` whose bytes come from gguf.quants.quantize on random values."""
    x = np.random.default_rng(seed).standard_normal(shape).astype(np.float32)
    raw = gguf.quants.quantize(x, Q[codec.upper()])
    return Tensor.from_raw(name, shape, codec, raw.view(np.uint8).reshape(-1))


def every_value_metadata() -> Metadata:
    md = Metadata()
    md.set("general.architecture", "llama", ValueType.STRING)
    scalars = {
        ValueType.UINT8: 255,
        ValueType.INT8: -128,
        ValueType.UINT16: 65535,
        ValueType.INT16: -32768,
        ValueType.UINT32: 2**32 - 1,
        ValueType.INT32: -(2**31),
        ValueType.FLOAT32: float(np.float32(3.25)),
        ValueType.BOOL: False,
        ValueType.STRING: "ünïcödé ▁",
        ValueType.UINT64: 2**64 - 1,
        ValueType.INT64: -(2**63),
        ValueType.FLOAT64: 1e-300,
    }
    for vt, v in scalars.items():
        md.set(f"s.{vt.name.lower()}", v, vt)
    for vt in scalars:
        if vt == ValueType.STRING:
            md.set("a.string", ["a", "", "bc", "▁x"], ValueType.ARRAY, vt)
        elif vt == ValueType.BOOL:
            md.set("a.bool", np.array([True, False, True]), ValueType.ARRAY, vt)
        else:
            md.set(f"a.{vt.name.lower()}", np.arange(7).astype(vt.numpy_dtype), ValueType.ARRAY, vt)
    return md


def small_bundle(seed: int = 0) -> Bundle:
    """Metadata of every value type; f32, f16, i32, q8_0 and q4_0 tensors, 1-D to 3-D."""
    rng = np.random.default_rng(seed)
    tensors = [
        Tensor.from_array("token_embd.weight", rng.standard_normal((4, 32)).astype(np.float32)),
        Tensor.from_array("norm.weight", rng.standard_normal(32).astype(np.float16)),
        Tensor.from_array("ids", np.arange(-3, 6, dtype=np.int32)),
        quantized("blk.0.attn_q.weight", "q8_0", (3, 64), seed),
        quantized("blk.0.ffn_up.weight", "q4_0", (2, 2, 32), seed + 1),
    ]
    return Bundle(every_value_metadata(), tensors)


# ------------------------------------------------------------------------------ oracles


class _Params(ctypes.Structure):
    _fields_ = [("no_alloc", ctypes.c_bool), ("ctx", ctypes.c_void_p)]


@functools.cache
def _c_gguf():
    try:
        from tools.reference import ggml_c

        lib = ctypes.CDLL(str(ggml_c.library_path()))
    except Exception:  # no toolchain, no network, or the helper is absent
        return None
    lib.gguf_init_from_file.restype = ctypes.c_void_p
    lib.gguf_init_from_file.argtypes = (ctypes.c_char_p, _Params)
    lib.gguf_free.argtypes = (ctypes.c_void_p,)
    return lib


def c_reader_accepts(path: str | os.PathLike[str]) -> bool | None:
    """Whether llama.cpp's C reader opens the file (None when the C library is unavailable)."""
    lib = _c_gguf()
    if lib is None:
        return None
    ctx = lib.gguf_init_from_file(os.fsencode(path), _Params(True, None))
    if ctx:
        lib.gguf_free(ctx)
    return bool(ctx)


def assert_llama_readable(path: str | os.PathLike[str], big_endian: bool = False) -> None:
    """The file passes every llama.cpp rule (and the C reader itself, for little-endian)."""
    assert check_llama_rules(path) == []
    if not big_endian:
        assert c_reader_accepts(path) in (True, None)


#: Files a test writes on purpose beyond llama.cpp's rules start with this.
NOT_LLAMA = "nonllama"


@pytest.fixture(autouse=True)
def written_ggufs_pass_llama_rules(tmp_path):
    """After each test, every .gguf it left in tmp_path passes llama.cpp's rules (files named
    nonllama* excepted); test modules import this fixture to have it applied."""
    yield
    for path in sorted(tmp_path.rglob("*.gguf")):
        if not path.name.startswith(NOT_LLAMA):
            assert check_llama_rules(path) == [], path.name


def assert_gguf_reader_agrees(
    path: str | os.PathLike[str], bundle: Bundle, big_endian: bool = False
) -> None:
    """gguf.GGUFReader sees the same typed fields and the same tensor bytes as `bundle`."""
    reader = gguf.GGUFReader(path)
    fields = {k: f for k, f in reader.fields.items() if not k.startswith("GGUF.")}
    assert list(fields) == list(bundle.metadata)
    for key, value in bundle.metadata.typed_items():
        field = fields[key]
        assert [int(t) for t in field.types] == _types(value), key
        assert _plain(field.contents()) == _plain(value.plain()), key
    assert [t.name for t in reader.tensors] == list(bundle.tensors)
    with open(path, "rb") as f:
        for rt in reader.tensors:
            ours = bundle.tensors[rt.name]
            assert tuple(int(d) for d in rt.shape) == ours.shape[::-1] or ours.shape == ()
            assert int(rt.tensor_type) == ours.codec.facts.ggml_id
            assert int(rt.n_bytes) == ours.nbytes
            f.seek(int(rt.data_offset))
            stored = f.read(ours.nbytes)
            assert np.asarray(rt.data).tobytes() == stored, rt.name
            raw = np.ascontiguousarray(ours.raw())
            expected = swapped(raw, ours.codec.facts) if big_endian else raw
            assert expected.tobytes() == stored, rt.name


def _types(value: Value) -> list[int]:
    if value.type != ValueType.ARRAY:
        return [int(value.type)]
    return [int(ValueType.ARRAY), int(value.item_type)]


def _plain(v):
    if isinstance(v, (list, tuple)):
        return [_plain(x) for x in v]
    if isinstance(v, np.generic):
        return v.item()
    return v
