"""APR v2 reading: every length and offset checked against the file size before it is read,
both CRCs, the file length, index order and alignment, no overlapping payloads
(formats/apr.md)."""

from __future__ import annotations

import itertools
import os
import struct
from dataclasses import dataclass, replace
from typing import BinaryIO

import construct

from bundler.bundle import Bundle, FileSource, Tensor
from bundler.codecs import Codec, by_apr_code
from bundler.containers import typed_json
from bundler.containers.apr import metadata as apr_metadata
from bundler.containers.apr.crc import file_crc, header_crc
from bundler.containers.apr.details import AprDetails
from bundler.containers.apr.schema import (
    ALIGNMENT,
    FOOTER_SIZE,
    HEADER_COMPILED,
    HEADER_CRC_AT,
    HEADER_FIELDS,
    HEADER_SIZE,
    INDEX_ENTRY_COMPILED,
    MAGIC,
    MAX_METADATA_BYTES,
    MAX_NAME_BYTES,
    MAX_NDIM,
    MIN_ENTRY_BYTES,
    NAME,
    OLD_MAGICS,
    UNREADABLE_FLAGS,
    VERSION,
    Flags,
    align,
)
from bundler.containers.limits import MAX_TENSORS, shape_problem
from bundler.containers.oserrors import reading
from bundler.errors import (
    FormatError,
    TruncatedError,
    UnknownCodecError,
    UnsupportedFormatError,
)

#: Byte offset of each header field: where an error about that field points.
_AT = {name: at for name, (at, _) in HEADER_FIELDS.items()}


@dataclass
class _Entry:
    name: str
    codec: Codec
    shape: tuple[int, ...]
    offset: int
    size: int
    at: int  # file offset of the index entry


def _data_order(e: _Entry) -> tuple[int, bool]:
    # A zero-size tensor shares its offset with the tensor written after it: it goes first.
    return e.offset, e.size > 0


def read(path: str | os.PathLike[str], verify_footer: bool = True) -> Bundle:
    """The bundle in the APR v2 file at `path`; tensors stay in the file until read.

    Every check of formats/apr.md is made; `verify_footer=False` skips only the footer CRC,
    which reads the whole file (in fixed-size chunks).
    """
    path = os.fspath(path)
    try:
        with reading(path, "an APR file"), open(path, "rb") as f:
            return _Reader(path, f, os.fstat(f.fileno()).st_size).read(verify_footer)
    except (construct.ConstructError, struct.error) as exc:  # a check missed above
        raise FormatError(path, None, f"malformed APR structure: {exc}") from None


class _Reader:
    def __init__(self, path: str, f: BinaryIO, size: int):
        self.path, self.f, self.size = path, f, size

    def fail(self, offset: int | None, problem: str, cls: type = FormatError) -> None:
        raise cls(self.path, offset, problem)

    def read(self, verify_footer: bool) -> Bundle:
        h = self._header()
        end = self.size - FOOTER_SIZE  # where the footer starts
        raw_meta = self._metadata_bytes(h, end)
        md, typed = apr_metadata.loads(raw_meta, self.path, h.metadata_offset)
        entries = self._index(h, end)
        self._check_payloads(h, entries, end)
        if verify_footer:
            self._check_footer(end)
        tensors = [
            Tensor(
                e.name,
                e.shape,
                e.codec,
                FileSource(self.path, h.data_offset + e.offset, e.size, e.codec),
            )
            for e in sorted(entries, key=_data_order)
        ]
        info = AprDetails(h.flags, (h.major, h.minor))
        if not typed:  # a file aprender wrote: keep its JSON for an identical rewrite
            info = replace(
                info,
                metadata_json=raw_meta.decode("utf-8"),
                metadata_snapshot=typed_json.dumps(md),
            )
        return Bundle(md, tensors, format=NAME, path=self.path, format_info=info)

    def _header(self):
        head = self.f.read(HEADER_SIZE)
        magic = head[:4]
        if magic in OLD_MAGICS:
            self.fail(
                _AT["magic"],
                f"{OLD_MAGICS[magic]} files are not supported; only APR v2 with magic "
                "'APR\\0' is (re-export the model with a current aprender)",
                UnsupportedFormatError,
            )
        if magic != MAGIC:
            what = f"starts with {head[:4].hex(' ')}" if head else "is empty"
            problem = f"not an APR v2 file: expected magic 41 50 52 00 ('APR\\0'), {what}"
            self.fail(_AT["magic"], problem)
        if len(head) < HEADER_SIZE:
            self.fail(
                len(head),
                f"truncated: the header needs bytes 0..{HEADER_SIZE} "
                f"but the file ends at {len(head)}",
                TruncatedError,
            )
        h = HEADER_COMPILED.parse(head)
        crc = header_crc(head)
        if crc != h.header_crc:
            self.fail(
                HEADER_CRC_AT,
                f"header CRC mismatch: stored {h.header_crc:#010x}, computed {crc:#010x} "
                "over bytes 0..40 and 44..64 (the header is corrupt)",
            )
        if (h.major, h.minor) != VERSION:
            self.fail(
                _AT["version"],
                f"unsupported APR version {h.major}.{h.minor}; only 2.0 is supported",
                UnsupportedFormatError,
            )
        self._check_flags(h.flags)
        if any(h.reserved):
            self.fail(_AT["reserved"], "reserved header bytes 44..64 must be zero")
        return h

    def _check_flags(self, flags: int) -> None:
        if flags & Flags.COLUMN_MAJOR:
            self.fail(
                _AT["flags"],
                "the LAYOUT_COLUMN_MAJOR flag (0x0800) is set: column-major APR files are "
                "refused (aprender refuses them too); re-export with row-major layout",
                UnsupportedFormatError,
            )
        named = [name for bit, name in UNREADABLE_FLAGS if flags & bit]
        if named:
            self.fail(
                _AT["flags"],
                f"flags {flags:#06x} ask for {', '.join(named)}: APR v2 defines no layout for "
                "compressed, encrypted or signed payloads, so they cannot be read",
                UnsupportedFormatError,
            )
        if flags & ~Flags.KNOWN:
            self.fail(
                _AT["flags"],
                f"unknown flag bits {flags & ~Flags.KNOWN:#06x} (flags {flags:#06x})",
                UnsupportedFormatError,
            )

    def _metadata_bytes(self, h, end: int) -> bytes:
        if end < HEADER_SIZE:
            self.fail(
                self.size,
                f"truncated: a header and a {FOOTER_SIZE}-byte footer need "
                f"{HEADER_SIZE + FOOTER_SIZE} bytes but the file has {self.size}",
                TruncatedError,
            )
        if h.metadata_size > MAX_METADATA_BYTES:
            self.fail(
                _AT["metadata_size"],
                f"metadata section of {h.metadata_size:,} bytes is more than the limit of "
                f"{MAX_METADATA_BYTES:,}",
            )
        if h.metadata_offset < HEADER_SIZE:
            problem = f"metadata offset {h.metadata_offset:,} lies inside the header"
            self.fail(_AT["metadata_offset"], problem)
        meta_end = h.metadata_offset + h.metadata_size
        if meta_end > end:
            self.fail(
                _AT["metadata_size"],
                f"truncated or bad sizes: metadata needs bytes {h.metadata_offset:,}.."
                f"{meta_end:,} but the data ends at {end:,} (file size {self.size:,})",
                TruncatedError,
            )
        if not meta_end <= h.tensor_index_offset <= h.data_offset:
            self.fail(
                _AT["tensor_index_offset"],
                f"sections out of order: metadata ends at {meta_end:,}, index at "
                f"{h.tensor_index_offset:,}, data at {h.data_offset:,}",
            )
        if h.data_offset > end:
            self.fail(
                _AT["data_offset"],
                f"truncated or bad offset: the data section starts at {h.data_offset:,} "
                f"but the footer starts at {end:,} (file size {self.size:,})",
                TruncatedError,
            )
        if h.tensor_index_offset % ALIGNMENT or h.data_offset % ALIGNMENT:
            self.fail(
                _AT["tensor_index_offset"],
                f"index offset {h.tensor_index_offset:,} and data offset {h.data_offset:,} "
                f"must be multiples of {ALIGNMENT}",
            )
        self.f.seek(h.metadata_offset)
        return self.f.read(h.metadata_size)

    def _index(self, h, end: int) -> list[_Entry]:
        start, stop = h.tensor_index_offset, h.data_offset
        if h.tensor_count > MAX_TENSORS:
            self.fail(
                _AT["tensor_count"],
                f"tensor count {h.tensor_count:,} is more than the limit of {MAX_TENSORS:,}",
            )
        if h.tensor_count * MIN_ENTRY_BYTES > stop - start:
            self.fail(
                _AT["tensor_count"],
                f"tensor count {h.tensor_count:,} cannot fit: even the smallest entries need "
                f"{h.tensor_count * MIN_ENTRY_BYTES:,} bytes but the index has "
                f"{stop - start:,} (bytes {start:,}..{stop:,})",
            )
        self.f.seek(start)
        pos = start
        entries: list[_Entry] = []
        for i in range(h.tensor_count):
            entry = self._entry(i, pos, stop)
            pos = entry[1]
            entries.append(entry[0])
        self._check_order(entries)
        return entries

    def _take(self, n: int, pos: int, stop: int, what: str) -> bytes:
        if pos + n > stop:
            self.fail(
                pos,
                f"{what} needs bytes {pos:,}..{pos + n:,} but the tensor index ends at {stop:,}",
            )
        return self.f.read(n)

    def _entry(self, i: int, at: int, stop: int) -> tuple[_Entry, int]:
        what = f"index entry {i}"
        head = self._take(2, at, stop, what)
        name_len = int.from_bytes(head, "little")
        if name_len > MAX_NAME_BYTES:
            self.fail(at, f"{what}: name length {name_len:,} exceeds {MAX_NAME_BYTES} bytes")
        mid = self._take(name_len + 2, at + 2, stop, what)
        ndim = mid[-1]
        if ndim > MAX_NDIM:
            self.fail(at + 3 + name_len, f"{what}: {ndim} dimensions, at most {MAX_NDIM}")
        tail = self._take(8 * ndim + 16, at + 4 + name_len, stop, what)
        e = INDEX_ENTRY_COMPILED.parse(head + mid + tail)
        try:
            name = e.name.decode("utf-8")
        except UnicodeDecodeError:
            self.fail(at + 2, f"{what}: tensor name is not valid UTF-8: {e.name!r}")
        try:
            codec = by_apr_code(e.dtype)
        except UnknownCodecError:
            self.fail(at + 2 + name_len, f"{what} ({name!r}): unknown dtype code {e.dtype}")
        shape = tuple(int(d) for d in e.dims)
        problem = shape_problem(shape, MAX_NDIM)
        if problem:
            self.fail(at + 4 + name_len, f"{what} ({name!r}): {problem}")
        after = at + 4 + name_len + 8 * ndim + 16
        return _Entry(name, codec, shape, int(e.offset), int(e.size), at), after

    def _check_order(self, entries: list[_Entry]) -> None:
        for prev, cur in itertools.pairwise(entries):
            a, b = prev.name.encode(), cur.name.encode()
            if b == a:
                self.fail(cur.at, f"duplicate tensor name {cur.name!r} in the index")
            if b < a:
                self.fail(
                    cur.at,
                    f"tensor index not sorted by name: {cur.name!r} comes after {prev.name!r}",
                )

    def _check_payloads(self, h, entries: list[_Entry], end: int) -> None:
        data_end = h.data_offset
        for e in entries:
            facts = e.codec.facts
            shape_ok = facts.flat or not facts.is_block or facts.block_size == 1
            if not shape_ok and (not e.shape or e.shape[-1] % facts.block_size):
                self.fail(
                    e.at,
                    f"tensor {e.name!r}: {e.codec.name} needs the last dimension to be a "
                    f"multiple of {facts.block_size}, shape is {e.shape}",
                )
            need = facts.nbytes(e.shape)
            if e.size != need:
                self.fail(
                    e.at,
                    f"tensor {e.name!r}: size {e.size:,} does not match {e.codec.name} "
                    f"{e.shape}, which needs {need:,} bytes",
                )
            if e.offset % ALIGNMENT:
                self.fail(e.at, f"tensor {e.name!r}: offset {e.offset:,} is not 64-aligned")
            first = h.data_offset + e.offset
            if first + e.size > end:
                self.fail(
                    end if first <= end else e.at,
                    f"truncated or bad offset: tensor {e.name!r} needs bytes {first:,}.."
                    f"{first + e.size:,} but the data ends at {end:,} "
                    f"(file size {self.size:,})",
                    TruncatedError,
                )
            data_end = max(data_end, first + align(e.size))
        by_offset = sorted((e for e in entries if e.size), key=lambda e: e.offset)
        for a, b in itertools.pairwise(by_offset):
            if a.offset + a.size > b.offset:
                self.fail(
                    h.data_offset + b.offset,
                    f"tensors {a.name!r} (bytes {a.offset:,}..{a.offset + a.size:,}) and "
                    f"{b.name!r} (from {b.offset:,}) overlap (offsets relative to the data "
                    f"section at {h.data_offset:,})",
                )
        if end < data_end:
            self.fail(
                end,
                f"truncated: the padded tensor data ends at {data_end:,} and the footer needs "
                f"{FOOTER_SIZE} more bytes, but the file ends at {self.size:,}",
                TruncatedError,
            )
        if end > data_end:
            self.fail(
                data_end,
                f"{end - data_end:,} unexpected bytes between the tensor data (ends at "
                f"{data_end:,}) and the footer",
            )

    def _check_footer(self, end: int) -> None:
        self.f.seek(end)
        stored = int.from_bytes(self.f.read(FOOTER_SIZE), "little")
        crc = file_crc(self.f, end)
        if crc != stored:
            self.fail(
                end,
                f"footer CRC mismatch: stored {stored:#010x}, computed {crc:#010x} over bytes "
                f"0..{end:,} (the file is corrupt)",
            )
