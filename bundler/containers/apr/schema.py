"""Construct schemas of the APR v2 header and tensor index entry, and the format's constants.

Byte tables: formats/apr.md. Payloads never pass through these schemas.
"""

from __future__ import annotations

import construct as c
from construct import this

#: The format's name in the registry and in Bundle.format.
NAME = "apr"
MAGIC = b"APR\0"
#: Magics of the older APR containers this project does not read.
OLD_MAGICS = {b"APRN": "APR v1 (APRN)", b"APR2": "early APR v2 (APR2)"}
VERSION = (2, 0)
HEADER_SIZE = 64
ALIGNMENT = 64
FOOTER_SIZE = 4
#: Byte range of the header CRC field; the CRC covers the header without it.
HEADER_CRC_AT = 40
MAX_NAME_BYTES = 256
MAX_NDIM = 8
#: aprender's largest metadata section.
APRENDER_MAX_METADATA = 16 << 20
#: bundler's largest metadata section (JSON costs several times its size once parsed).
MAX_METADATA_BYTES = 32 << 20
#: Smallest index entry: name length, empty name, dtype, ndim 0, offset, size.
MIN_ENTRY_BYTES = 2 + 1 + 1 + 8 + 8


class Flags:
    """Header flag bits (aprender's `AprV2Flags`)."""

    LZ4 = 0x0001
    ZSTD = 0x0002
    ENCRYPTED = 0x0004
    SIGNED = 0x0008
    SHARDED = 0x0010
    QUANTIZED = 0x0020
    HAS_FILTERBANK = 0x0040
    HAS_MODEL_CARD = 0x0080
    STREAMING = 0x0100
    HAS_VOCAB = 0x0200
    ROW_MAJOR = 0x0400
    COLUMN_MAJOR = 0x0800

    #: Every bit aprender defines.
    KNOWN = 0x0FFF


#: Flag bits that change how the payload must be read and have no defined v2 layout.
UNREADABLE_FLAGS = (
    (Flags.LZ4, "LZ4"),
    (Flags.ZSTD, "ZSTD"),
    (Flags.ENCRYPTED, "ENCRYPTED"),
    (Flags.SIGNED, "SIGNED"),
)


HEADER = c.Struct(
    "magic" / c.Bytes(4),
    "major" / c.Int8ul,
    "minor" / c.Int8ul,
    "flags" / c.Int16ul,
    "tensor_count" / c.Int32ul,
    "metadata_offset" / c.Int64ul,
    "metadata_size" / c.Int32ul,
    "tensor_index_offset" / c.Int64ul,
    "data_offset" / c.Int64ul,
    "header_crc" / c.Int32ul,
    "reserved" / c.Bytes(20),
)

INDEX_ENTRY = c.Struct(
    "name_len" / c.Int16ul,
    "name" / c.Bytes(this.name_len),
    "dtype" / c.Int8ul,
    "ndim" / c.Int8ul,
    "dims" / c.Array(this.ndim, c.Int64ul),
    "offset" / c.Int64ul,
    "size" / c.Int64ul,
)

HEADER_COMPILED = HEADER.compile()
INDEX_ENTRY_COMPILED = INDEX_ENTRY.compile()

#: Offsets of the header fields, for error messages and the hostile-input tests.
HEADER_FIELDS = {
    "magic": (0, 4),
    "version": (4, 2),
    "flags": (6, 2),
    "tensor_count": (8, 4),
    "metadata_offset": (12, 8),
    "metadata_size": (20, 4),
    "tensor_index_offset": (24, 8),
    "data_offset": (32, 8),
    "header_crc": (40, 4),
    "reserved": (44, 20),
}


def align(n: int) -> int:
    """`n` rounded up to the APR alignment."""
    return -(-n // ALIGNMENT) * ALIGNMENT


def entry_size(name_len: int, ndim: int) -> int:
    """Bytes of one index entry."""
    return 2 + name_len + 2 + 8 * ndim + 16
