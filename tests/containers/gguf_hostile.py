"""Generators of hostile GGUF files: a raw assembler where every count, length, type and
offset can lie, and the named cases tests/containers/test_gguf_hostile.py feeds the reader."""

from __future__ import annotations

import struct
from dataclasses import dataclass, field

from bundler.codecs.facts import TABLE

TB = 1 << 40
#: A GGML type id past the last one bundler knows (43 while Q2_0, 42, is the last).
UNKNOWN_TYPE = max(f.ggml_id for f in TABLE if f.ggml_id is not None) + 1


def string(s: bytes | str, length: int | None = None) -> bytes:
    b = s.encode() if isinstance(s, str) else s
    return struct.pack("<Q", len(b) if length is None else length) + b


def kv(key: bytes | str, vtype: int, payload: bytes, key_length: int | None = None) -> bytes:
    return string(key, key_length) + struct.pack("<I", vtype) + payload


def u32_kv(key: str, value: int) -> bytes:
    return kv(key, 4, struct.pack("<I", value))


def array(item: int, count: int, body: bytes) -> bytes:
    return struct.pack("<IQ", item, count) + body


@dataclass
class Info:
    name: bytes | str
    dims: list[int]
    ggml_type: int = 0
    offset: int = 0
    n_dims: int | None = None
    name_length: int | None = None

    def encode(self) -> bytes:
        n = len(self.dims) if self.n_dims is None else self.n_dims
        dims = b"".join(struct.pack("<Q", d) for d in self.dims)
        return (
            string(self.name, self.name_length)
            + struct.pack("<I", n)
            + dims
            + struct.pack("<IQ", self.ggml_type, self.offset)
        )


@dataclass
class Raw:
    """A GGUF file assembled field by field; nothing is checked."""

    kvs: list[bytes] = field(default_factory=list)
    infos: list[Info] = field(default_factory=list)
    data: bytes = b""
    version: int = 3
    tensor_count: int | None = None
    kv_count: int | None = None
    alignment: int = 32
    magic: bytes = b"GGUF"

    def build(self) -> bytes:
        head = self.magic + struct.pack(
            "<IQQ",
            self.version,
            len(self.infos) if self.tensor_count is None else self.tensor_count,
            len(self.kvs) if self.kv_count is None else self.kv_count,
        )
        head += b"".join(self.kvs) + b"".join(i.encode() for i in self.infos)
        if self.infos:
            head += bytes(-len(head) % self.alignment)
        return head + self.data


def valid() -> Raw:
    """Two f32 tensors of 8 values, a string key and an array: a file the reader accepts."""
    return Raw(
        kvs=[
            kv("general.architecture", 8, string("llama")),
            kv("a.tokens", 9, array(8, 2, string("x") + string("yz"))),
        ],
        infos=[Info("a", [8], 0, 0), Info("b", [4, 2], 0, 32)],
        data=bytes(range(32)) + bytes(range(32, 64)),
    )


def _with(**changes) -> Raw:
    r = valid()
    for k, v in changes.items():
        setattr(r, k, v)
    return r


def _infos(*infos: Info) -> list[Info]:
    return list(infos)


#: name -> (file bytes, a phrase the error message must contain)
def cases() -> dict[str, tuple[bytes, str]]:
    v = valid()
    a = v.infos[0]
    return {
        "tensor_count_2^60": (_with(tensor_count=1 << 60).build(), "tensor_count"),
        "kv_count_2^60": (_with(kv_count=1 << 60).build(), "kv_count"),
        "key_1TB": (
            _with(kvs=[kv("general.architecture", 8, string("x"), key_length=TB)]).build(),
            "string length",
        ),
        "string_value_1TB": (
            _with(kvs=[kv("k", 8, string("llama", length=TB))]).build(),
            "string length",
        ),
        "tensor_name_1TB": (
            _with(infos=[Info("a", [8], name_length=TB)]).build(),
            "string length",
        ),
        "string_array_2^60": (
            _with(kvs=[kv("t", 9, array(8, 1 << 60, string("x")))]).build(),
            "array of",
        ),
        "string_in_array_1TB": (
            _with(kvs=[kv("t", 9, array(8, 2, string("x") + string("y", TB)))]).build(),
            "claims",
        ),
        "int32_array_2^60": (
            _with(kvs=[kv("t", 9, array(5, 1 << 60, b"\0" * 8))]).build(),
            "array of",
        ),
        "nested_array_2^60": (
            _with(kvs=[kv("t", 9, array(9, 1 << 60, b""))]).build(),
            "array of",
        ),
        "nesting_bomb": (
            _with(
                kvs=[kv("t", 9, array(9, 1, b"".join(array(9, 1, b"") for _ in range(64))))]
            ).build(),
            "nested more than",
        ),
        "value_type_13": (_with(kvs=[kv("t", 13, b"\0" * 8)]).build(), "value type 13"),
        "array_item_type_99": (_with(kvs=[kv("t", 9, array(99, 1, b"\0"))]).build(), "type 99"),
        "empty_key": (_with(kvs=[kv("", 4, b"\0" * 4)]).build(), "empty key"),
        "duplicate_key": (
            _with(kvs=[u32_kv("k", 1), u32_kv("k", 2)]).build(),
            "duplicate metadata key",
        ),
        "alignment_not_power_of_two": (
            _with(kvs=[u32_kv("general.alignment", 48)]).build(),
            "power of two",
        ),
        "alignment_zero": (_with(kvs=[u32_kv("general.alignment", 0)]).build(), "power of two"),
        "alignment_wrong_type": (
            _with(kvs=[kv("general.alignment", 5, struct.pack("<i", 32))]).build(),
            "must be UINT32",
        ),
        "version_0": (_with(version=0).build(), "version 0"),
        "version_1": (_with(version=1).build(), "version 1"),
        "version_4": (_with(version=4).build(), "version 4"),
        "not_gguf": (b"GGML" + valid().build()[4:], "not a GGUF file"),
        "n_dims_2^32-1": (_with(infos=[Info("a", [8], n_dims=2**32 - 1)]).build(), "n_dims"),
        "n_dims_33": (_with(infos=[Info("a", [1] * 33)]).build(), "n_dims"),
        "negative_dim": (_with(infos=[Info("a", [2**64 - 8])]).build(), "negative"),
        "huge_dims": (
            _with(infos=[Info("a", [2**62, 2**62])]).build(),
            "cannot be materialized",
        ),
        "row_not_block_multiple": (
            _with(infos=[Info("a", [33, 1], ggml_type=2)]).build(),
            "not a multiple of the block size",
        ),
        "duplicate_tensor_name": (
            _with(infos=_infos(a, Info("a", [4, 2], 0, 32))).build(),
            "duplicate tensor name",
        ),
        "overlapping_offsets": (
            _with(infos=_infos(a, Info("b", [4, 2], 0, 0))).build(),
            "has offset 0",
        ),
        "gap_between_tensors": (
            _with(infos=_infos(a, Info("b", [4, 2], 0, 64)), data=v.data + bytes(32)).build(),
            "llama.cpp requires",
        ),
        "first_offset_not_zero": (
            _with(infos=_infos(Info("a", [8], 0, 32), Info("b", [4, 2], 0, 64))).build(),
            "llama.cpp requires",
        ),
        "offset_out_of_file": (
            _with(infos=_infos(a, Info("b", [4, 2], 0, 1 << 50))).build(),
            "llama.cpp requires",
        ),
        "data_truncated": (_with(data=v.data[:40]).build(), "truncated: tensor 'b'"),
        "data_start_past_end": (valid().build()[: len(valid().build()) - 64 - 8], "truncated"),
    }


def unknown_types(count: int) -> bytes:
    """`count` empty tensors of GGML type 43 (past the last type ggml has), unknown to bundler."""
    v = valid()
    v.infos = [Info(f"u{i}", [64], UNKNOWN_TYPE, 0) for i in range(count)]
    v.data = b""
    return v.build()


def unknown_type() -> bytes:
    """Tensor 'a' of GGML type 43 (past the last type ggml has, unknown to bundler), then 'b'."""
    v = valid()
    v.infos = [Info("a", [64], UNKNOWN_TYPE, 0), Info("b", [4, 2], 0, 32)]
    v.data = bytes(32) + bytes(range(32))
    return v.build()
