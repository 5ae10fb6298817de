"""Construct schemas of the GGUF header, key/value records and tensor infos (formats/gguf.md).

The schemas cover the fixed-layout records only. Array bodies (token lists of 49,152
strings, score tables) are sliced with numpy or scanned by `gguf_values`, never parsed
element by element here. Every length is checked against the end of the file (passed as
the `end` parse parameter) before bytes are read, so a lying length fails fast.
"""

from __future__ import annotations

from functools import cache
from typing import NamedTuple

from construct import (
    Array,
    Bytes,
    Check,
    Const,
    Construct,
    Float32b,
    Float32l,
    Float64b,
    Float64l,
    Int8sb,
    Int8ub,
    Int16sb,
    Int16sl,
    Int16ub,
    Int16ul,
    Int32sb,
    Int32sl,
    Int32ub,
    Int32ul,
    Int64sb,
    Int64sl,
    Int64ub,
    Int64ul,
    Pass,
    Struct,
    Switch,
    Tell,
    this,
)

from bundler.bundle import ValueType

MAGIC = b"GGUF"
#: Versions bundler reads; it always writes WRITE_VERSION.
READ_VERSIONS = (2, 3)
WRITE_VERSION = 3
#: The format's name in the registry.
NAME = "gguf"
DEFAULT_ALIGNMENT = 32
ALIGNMENT_KEY = "general.alignment"
#: llama.cpp's limits (ggml/src/gguf.cpp, ggml/include/ggml.h).
MAX_STRING_BYTES = 1 << 30
MAX_ARRAY_ITEMS = 1 << 30
MAX_NAME_BYTES = 63
MAX_DIMS = 4
#: The most dimensions bundler reads (files other writers made may exceed llama.cpp's 4).
MAX_DIMS_READ = 32
#: The most tensors of GGML types bundler does not know: each is kept as a record and warned
#: about, outside the compact tensor table, so their count is bounded on its own.
MAX_UNKNOWN_TENSORS = 4096
#: Deepest array nesting (llama.cpp reads none) and the other shared header limits.
from bundler.containers.limits import MAX_ENTRIES as MAX_ENTRIES  # noqa: E402
from bundler.containers.limits import MAX_NESTING as MAX_NESTING  # noqa: E402
from bundler.containers.limits import MAX_TENSORS as MAX_TENSORS  # noqa: E402

#: Smallest encodings, used to check counts against the bytes left before reading them.
MIN_KV_BYTES = 8 + 4 + 1
MIN_TENSOR_INFO_BYTES = 8 + 4 + 4 + 8
HEADER_BYTES = 4 + 4 + 8 + 8


class Schemas(NamedTuple):
    """The schemas of one byte order."""

    header: Construct
    string: Construct
    kv: Construct
    array_head: Construct
    tensor_info: Construct
    scalars: dict[ValueType, Construct]


_INTS = {
    False: {
        ValueType.UINT8: Int8ub,
        ValueType.INT8: Int8sb,
        ValueType.UINT16: Int16ul,
        ValueType.INT16: Int16sl,
        ValueType.UINT32: Int32ul,
        ValueType.INT32: Int32sl,
        ValueType.FLOAT32: Float32l,
        ValueType.BOOL: Int8ub,
        ValueType.UINT64: Int64ul,
        ValueType.INT64: Int64sl,
        ValueType.FLOAT64: Float64l,
    },
    True: {
        ValueType.UINT8: Int8ub,
        ValueType.INT8: Int8sb,
        ValueType.UINT16: Int16ub,
        ValueType.INT16: Int16sb,
        ValueType.UINT32: Int32ub,
        ValueType.INT32: Int32sb,
        ValueType.FLOAT32: Float32b,
        ValueType.BOOL: Int8ub,
        ValueType.UINT64: Int64ub,
        ValueType.INT64: Int64sb,
        ValueType.FLOAT64: Float64b,
    },
}


def _build(big_endian: bool) -> Schemas:
    u32 = Int32ub if big_endian else Int32ul
    u64 = Int64ub if big_endian else Int64ul
    scalars = _INTS[big_endian]
    # A GGUF string: u64 byte length, then the bytes. The length must fit in what is left
    # of the file (the `end` parse parameter) before any byte is read.
    string = Struct(
        "length" / u64,
        "at" / Tell,
        Check(this.length <= this._params.end - this.at),
        "data" / Bytes(this.length),
    )
    array_head = Struct("item_type" / u32, "count" / u64)
    value = Switch(
        this.type,
        # plain int keys: the compiler writes the keys' repr into its source
        {int(t): c for t, c in scalars.items()}
        | {int(ValueType.STRING): string, int(ValueType.ARRAY): array_head},
        default=Pass,
    )
    kv = Struct("key" / string, "type" / u32, "value" / value)
    tensor_info = Struct(
        "name" / string,
        "n_dims" / u32,
        Check(this.n_dims <= MAX_DIMS_READ),
        "dims" / Array(this.n_dims, u64),
        "ggml_type" / u32,
        "offset" / u64,
    )
    header = Struct("magic" / Const(MAGIC), "version" / u32, "tensor_count" / u64, "kv_count" / u64)
    return Schemas(header, string, kv, array_head, tensor_info, dict(scalars))


@cache
def schemas(big_endian: bool = False, compiled: bool = True) -> Schemas:
    """The schemas of one byte order, compiled by Construct unless `compiled` is False."""
    s = _build(big_endian)
    if not compiled:
        return s
    return Schemas(
        s.header.compile(),
        s.string.compile(),
        s.kv.compile(),
        s.array_head.compile(),
        s.tensor_info.compile(),
        {t: c.compile() for t, c in s.scalars.items()},
    )
