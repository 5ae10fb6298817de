"""The two CRC32s of an APR v2 file: the header's (without its own field) and the footer's
(everything before it)."""

from __future__ import annotations

import zlib
from typing import BinaryIO

from bundler.containers.apr.schema import (
    HEADER_CRC_AT,
    HEADER_SIZE,
)

#: Bytes read at a time when the footer CRC is computed.
CRC_CHUNK = 4 << 20


def header_crc(header: bytes) -> int:
    """CRC32 of a 64-byte header without its CRC field."""
    return zlib.crc32(header[HEADER_CRC_AT + 4 : HEADER_SIZE], zlib.crc32(header[:HEADER_CRC_AT]))


def file_crc(f: BinaryIO, end: int) -> int:
    """CRC32 of bytes [0, end) of an open file, read in fixed-size chunks."""
    f.seek(0)
    crc = 0
    left = end
    buf = bytearray(min(CRC_CHUNK, end))
    view = memoryview(buf)
    while left:
        got = f.readinto(view[: min(left, len(buf))])
        if not got:
            break
        crc = zlib.crc32(view[:got], crc)
        left -= got
    return crc
