"""APR v2 (aprender's container, magic `APR\\0`): read and write.

Layout, checks and conventions: formats/apr.md. The reader checks every length and offset
against the file size before reading, both CRCs (the footer CRC streamed in chunks, on by
default: `read(path, verify_footer=False)` skips it), the file length, index order and
alignment, and that no two payloads overlap. The writer streams: header, metadata and index
are computed up front, then each tensor's stored bytes are copied chunk by chunk.
"""

from __future__ import annotations

from bundler.bundle import Bundle
from bundler.containers.apr.checks import check as check
from bundler.containers.apr.checks import check_strict as check_strict
from bundler.containers.apr.crc import file_crc as file_crc
from bundler.containers.apr.crc import header_crc as header_crc
from bundler.containers.apr.details import AprDetails
from bundler.containers.apr.reader import read as read
from bundler.containers.apr.schema import MAGIC, OLD_MAGICS
from bundler.containers.apr.schema import NAME as NAME
from bundler.containers.apr.writer import non_native as non_native
from bundler.containers.apr.writer import write as write
from bundler.containers.protocol import claims_no_path

TITLE = "APR"
EXTENSIONS = ("apr",)
#: An APR file is always one file.
SPLIT_OPTION = None
WRITES_FOLDER = False
DETAILS = AprDetails


def sniff(head: bytes) -> bool:
    """True for APR files, the old v1/early-v2 magics included (read refuses those)."""
    return head[:4] == MAGIC or head[:4] in OLD_MAGICS


#: Files of this format always start with its magic bytes.
sniff_path = claims_no_path


def read_header(path: str) -> Bundle:
    """`read` without the footer CRC, which covers the whole file (`check` makes it)."""
    return read(path, verify_footer=False)


def describe(bundle: Bundle) -> AprDetails:
    """The APR details of `bundle` (a new file's defaults when it was not read from one)."""
    return AprDetails.of(bundle) or AprDetails()
