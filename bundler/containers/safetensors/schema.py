"""The SafeTensors byte layout: the 8-byte length prefix (a Construct schema), the header's
reserved key and size limit, the reference's dtype table and the parsed header's shape.

The layout is `u64 N` (little-endian), N bytes of UTF-8 JSON, then the data buffer that
tensor offsets are relative to (formats/safetensors.md).
"""

from __future__ import annotations

import math
import re
from array import array
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from construct import Int64ul, Struct

from bundler.codecs import by_safetensors_dtype
from bundler.tensortable import Records

#: The format's name in the registry and in Bundle.format.
NAME = "safetensors"
#: The length prefix; the only binary framing of the format.
PREFIX = Struct("header_size" / Int64ul)
PREFIX_COMPILED = PREFIX.compile()
PREFIX_SIZE = 8
#: The reference reader refuses longer headers.
MAX_HEADER_SIZE = 100_000_000
METADATA_KEY = "__metadata__"
#: Most dimensions of one tensor (the reference sets none; numpy 1.x reads at most 32).
MAX_DIMS = 32
_U64_MAX = 2**64 - 1

#: The reference's dtype enum, in its declared (ascending alignment) order. Its writer lays
#: tensors out by this order descending, then by name; dtypes of one size are not
#: interchangeable (I8 comes before U8 and F8_E5M2 after it). Checked against the
#: `safetensors` package by tests/containers/test_safetensors_layout.py.
DTYPE_ORDER = (
    "BOOL",
    "F4",
    "F6_E2M3",
    "F6_E3M2",
    "U8",
    "I8",
    "F8_E5M2",
    "F8_E4M3",
    "F8_E8M0",
    "F8_E4M3FNUZ",
    "F8_E5M2FNUZ",
    "I16",
    "U16",
    "F16",
    "BF16",
    "I32",
    "U32",
    "F32",
    "C64",
    "F64",
    "I64",
    "U64",
)
_RANK = {d: i for i, d in enumerate(DTYPE_ORDER)}
_WS = re.compile(r"[ \t\n\r]*")


def dtype_bits(dtype: str) -> int:
    """Bits of one element of a SafeTensors dtype (4 for F4, 6 for the F6 types)."""
    facts = by_safetensors_dtype(dtype).facts
    return 8 * facts.type_size // facts.block_size


def data_nbytes(dtype: str, shape: tuple[int, ...]) -> int | None:
    """Bytes of a tensor as the reference reader computes them; None when the element
    count times the element bits is not a whole number of bytes (packed F4/F6 types)."""
    bits = math.prod(shape) * dtype_bits(dtype)
    return None if bits % 8 else bits // 8


def layout_key(name: str, dtype: str) -> tuple[int, str]:
    """Sort key of the reference writer's data order: dtype order descending, then name."""
    return (-_RANK[dtype], name)


@dataclass(frozen=True, slots=True)
class Entry:
    """One tensor of a header: its dtype, shape and byte range in the data buffer."""

    name: str
    dtype: str
    shape: tuple[int, ...]
    begin: int
    end: int


class Entries(Records[Entry]):
    """A header's tensor entries in header order, as columns (`Entry`s made on demand)."""

    def __init__(self) -> None:
        super().__init__()
        self.dtypes = array("B")  # index into DTYPE_ORDER
        self.begins = array("Q")
        self.ends = array("Q")

    def add(self, name: bytes, dtype: str, shape: Sequence[int], begin: int, end: int) -> None:
        """Append an entry whose name is already in its stored form (`Names.encode`)."""
        self.names.add_encoded(name)
        self.shapes.append(shape)
        self.dtypes.append(_RANK[dtype])
        self.begins.append(begin)
        self.ends.append(end)

    def dtype(self, i: int) -> str:
        return DTYPE_ORDER[self.dtypes[i]]

    def record(self, i: int) -> Entry:
        return Entry(self.names[i], self.dtype(i), self.shapes[i], self.begins[i], self.ends[i])


@dataclass(frozen=True)
class Header:
    """A parsed, validated header."""

    size: int
    #: `__metadata__` in file order; None when the key is absent or null
    metadata: dict[str, str] | None
    #: tensors in header order
    entries: Entries
    #: the parser, kept to find where a key is when a later check fails
    parser: Any = field(repr=False, compare=False)

    @property
    def data_start(self) -> int:
        """File offset of the data buffer."""
        return PREFIX_SIZE + self.size

    def key_offset(self, key: str) -> int:
        """File offset of a top-level key's opening quote (the header start if absent)."""
        return self.parser.key_offset(key)


def checked_count(shape: tuple[int, ...]) -> int | None:
    """The element count, or None once a partial product overflows 64 bits (as the
    reference's checked multiplication fails, even when a later axis is 0)."""
    count = 1
    for s in shape:
        count *= s
        if count > _U64_MAX:
            return None
    return count


@dataclass(frozen=True)
class Planned:
    """A tensor as it is stored: name, SafeTensors dtype, stored shape and byte count."""

    name: str
    dtype: str
    shape: tuple[int, ...]
    nbytes: int
