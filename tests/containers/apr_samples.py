"""Sample bundles and an independent APR v2 byte builder/checker (struct + zlib only).

The builder and checker do not use bundler's APR code, so they check it from outside:
`raw_apr` writes files the way aprender lays them out (or with deliberate lies), and
`check_layout` verifies CRCs, index order and alignment of any APR file.
"""

from __future__ import annotations

import struct
import zlib
from dataclasses import dataclass, field

import numpy as np
from gguf import GGMLQuantizationType
from gguf.quants import quantize

from bundler.bundle import Bundle, Metadata, Tensor, Value, ValueType

HEADER = struct.Struct("<4sBBHIQIQQI20s")


def _align(n: int) -> int:
    return -(-n // 64) * 64


def typed_metadata() -> Metadata:
    """Metadata holding every value type, nested arrays included."""
    md = Metadata()
    md["general.architecture"] = "llama"
    md["general.name"] = "sample ünïcode"
    md.set("u8", 200, ValueType.UINT8)
    md.set("i8", -100, ValueType.INT8)
    md.set("u16", 60000, ValueType.UINT16)
    md.set("i16", -30000, ValueType.INT16)
    md.set("u32", 4_000_000_000, ValueType.UINT32)
    md.set("i32", -2_000_000_000, ValueType.INT32)
    md.set("f32", float(np.float32(0.1)), ValueType.FLOAT32)
    md.set("bool", True, ValueType.BOOL)
    md.set("u64", 2**64 - 1, ValueType.UINT64)
    md.set("i64", -(2**63), ValueType.INT64)
    md.set("f64", 1e-300, ValueType.FLOAT64)
    md.set("nan", float("nan"), ValueType.FLOAT32)
    md.set("tokens", ["<s>", "</s>", "a b", "ü"], ValueType.ARRAY, ValueType.STRING)
    md.set("ids", np.arange(5, dtype=np.int32), ValueType.ARRAY, ValueType.INT32)
    md.set("scores", np.array([0.5, -1.25], np.float32), ValueType.ARRAY, ValueType.FLOAT32)
    nested = [
        Value(ValueType.ARRAY, np.array([1, 2], np.uint8), ValueType.UINT8),
        Value(ValueType.ARRAY, ["x"], ValueType.STRING),
    ]
    md.set("nested", nested, ValueType.ARRAY, ValueType.ARRAY)
    return md


def sample_bundle() -> Bundle:
    """Typed metadata and q4_0/q8_0/q4_k/f16/f32/apr_q4/apr_q8 tensors, not in name order."""
    rng = np.random.default_rng(7)
    x = rng.standard_normal((4, 256)).astype(np.float32)
    q4k = rng.integers(0, 256, 4 * 144, dtype=np.uint8)  # raw blocks: copied, never decoded
    tensors = [
        Tensor.from_raw("token_embd.weight", (4, 256), "q4_0", quantize(x, _Q.Q4_0)),
        Tensor.from_raw("blk.0.ffn_up.weight", (4, 256), "q8_0", quantize(x, _Q.Q8_0)),
        Tensor.from_raw("blk.0.attn_k.weight", (4, 256), "q4_k", q4k),
        Tensor.from_array("output_norm.weight", x[0, :48].astype(np.float16), "f16"),
        Tensor.from_array("blk.0.attn_norm.weight", x[1, :17], "f32"),
        Tensor.from_array("blk.0.apr4", x[:3, :50], "apr_q4"),
        Tensor.from_array("a.apr8", x[2, :9], "apr_q8"),
    ]
    return Bundle(typed_metadata(), tensors)


def assert_same_bundle(got: Bundle, want: Bundle) -> None:
    assert got.metadata == want.metadata
    assert list(got.metadata) == list(want.metadata)
    assert list(got.tensors) == list(want.tensors)
    for name, t in want.tensors.items():
        g = got.tensors[name]
        assert (g.shape, g.codec) == (t.shape, t.codec), name
        assert g.raw().tobytes() == t.raw().tobytes(), name


# ---------------------------------------------------------------- the independent builder


@dataclass
class RawEntry:
    name: bytes
    dtype: int
    dims: list[int]
    offset: int
    size: int
    ndim: int | None = None  # a lying ndim
    name_len: int | None = None  # a lying name length

    def pack(self) -> bytes:
        ndim = len(self.dims) if self.ndim is None else self.ndim
        name_len = len(self.name) if self.name_len is None else self.name_len
        return (
            struct.pack("<H", name_len)
            + self.name
            + struct.pack("<BB", self.dtype, ndim)
            + b"".join(struct.pack("<Q", d) for d in self.dims)
            + struct.pack("<QQ", self.offset, self.size)
        )


@dataclass
class RawApr:
    """An APR v2 file as aprender lays it out; any field can be overridden to lie."""

    metadata: bytes = b'{"model_type":"custom"}'
    entries: list[RawEntry] = field(default_factory=list)
    payloads: list[bytes] = field(default_factory=list)  # in data order
    flags: int = 0x0400
    overrides: dict[str, int | bytes] = field(default_factory=dict)
    footer: int | None = None  # a lying footer CRC

    def build(self) -> bytes:
        index = b"".join(e.pack() for e in self.entries)
        meta_pad = _align(len(self.metadata))
        fields = {
            "magic": b"APR\0",
            "major": 2,
            "minor": 0,
            "flags": self.flags,
            "tensor_count": len(self.entries),
            "metadata_offset": 64,
            "metadata_size": len(self.metadata),
            "tensor_index_offset": 64 + meta_pad,
            "data_offset": 64 + meta_pad + _align(len(index)),
            "header_crc": None,
            "reserved": bytes(20),
        }
        fields.update(self.overrides)
        if fields["header_crc"] is None:
            fields["header_crc"] = 0
            probe = HEADER.pack(*fields.values())
            fields["header_crc"] = zlib.crc32(probe[:40] + probe[44:])
        out = bytearray(HEADER.pack(*fields.values()))
        out += self.metadata.ljust(meta_pad, b"\0")
        out += index.ljust(_align(len(index)), b"\0")
        for p in self.payloads:
            out += p.ljust(_align(len(p)), b"\0")
        crc = zlib.crc32(out) if self.footer is None else self.footer
        return bytes(out + struct.pack("<I", crc))


def entries_for(tensors: list[tuple[str, int, list[int], bytes]]) -> tuple[list, list]:
    """Sorted index entries and payloads for (name, dtype, dims, payload), data in list order."""
    entries, payloads, off = [], [], 0
    for name, dtype, dims, payload in tensors:
        entries.append(RawEntry(name.encode(), dtype, dims, off, len(payload)))
        payloads.append(payload)
        off += _align(len(payload))
    entries.sort(key=lambda e: e.name)
    return entries, payloads


# ---------------------------------------------------------------- the independent checker


def check_layout(data: bytes) -> list[tuple[str, int, int]]:
    """Assert the APR invariants of `data`; return (name, absolute offset, size) per tensor."""
    fields = HEADER.unpack_from(data)
    magic, major, minor, flags, count, meta_at, meta_size, index_at, data_at, crc, reserved = fields
    assert magic == b"APR\0" and (major, minor) == (2, 0)
    assert flags & 0x0400 and not flags & 0x0800
    assert crc == zlib.crc32(data[:40] + data[44:64]), "header CRC"
    assert reserved == bytes(20)
    assert struct.unpack_from("<I", data, len(data) - 4)[0] == zlib.crc32(data[:-4]), "footer CRC"
    assert meta_at == 64 and index_at == 64 + _align(meta_size)
    assert not any(data[meta_at + meta_size : index_at]), "metadata padding"
    pos, names, tensors = index_at, [], []
    for _ in range(count):
        (name_len,) = struct.unpack_from("<H", data, pos)
        name = data[pos + 2 : pos + 2 + name_len]
        pos += 2 + name_len
        _dtype, ndim = struct.unpack_from("<BB", data, pos)
        pos += 2 + 8 * ndim
        offset, size = struct.unpack_from("<QQ", data, pos)
        pos += 16
        assert offset % 64 == 0 and (data_at + offset) % 64 == 0
        names.append(name)
        tensors.append((name.decode(), data_at + offset, size))
    assert names == sorted(names), "index sorted by name bytes"
    assert data_at == index_at + _align(pos - index_at)
    assert not any(data[pos:data_at]), "index padding"
    end = max([_align(off + size) for _, off, size in tensors], default=data_at)
    assert end == len(data) - 4, "file length"
    return tensors


_Q = GGMLQuantizationType
