"""APR v2 (aprender's container, magic `APR\\0`): read and write.

Layout, checks and conventions: formats/apr.md. The reader checks every length and offset
against the file size before reading, both CRCs (the footer CRC streamed in chunks, on by
default: `read(path, verify_footer=False)` skips it), the file length, index order and
alignment, and that no two payloads overlap. The writer streams: header, metadata and index
are computed up front, then each tensor's stored bytes are copied chunk by chunk.
"""

from __future__ import annotations

from bundler.containers.apr.crc import file_crc, header_crc
from bundler.containers.apr.reader import read
from bundler.containers.apr.schema import MAGIC, NAME, OLD_MAGICS
from bundler.containers.apr.writer import non_native, write

EXTENSIONS = ("apr",)


def sniff(head: bytes) -> bool:
    """True for APR files, the old v1/early-v2 magics included (read refuses those)."""
    return head[:4] == MAGIC or head[:4] in OLD_MAGICS


__all__ = ["EXTENSIONS", "NAME", "file_crc", "header_crc", "non_native", "read", "sniff", "write"]
