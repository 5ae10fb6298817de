"""APR v2 reading: every length and offset checked against the file size before it is read,
both CRCs, the file length, index order and alignment, no overlapping payloads
(formats/apr.md)."""

from __future__ import annotations

import itertools
import os
import struct
from array import array
from dataclasses import replace
from typing import BinaryIO

import construct
import numpy as np

from bundler.bundle import Bundle
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
from bundler.tensortable import Names, Shapes, TensorTable

#: Byte offset of each header field: where an error about that field points.
_AT = {name: at for name, (at, _) in HEADER_FIELDS.items()}


class _Entries:
    """The tensor index as columns, in index order."""

    def __init__(self) -> None:
        self.names = Names()
        self.shapes = Shapes()
        self.codes = array("H")
        self.codecs: dict[int, Codec] = {}
        self.offsets = array("Q")
        self.sizes = array("Q")
        self.at = array("q")  # file offset of each index entry

    def __len__(self) -> int:
        return len(self.codes)

    def table(self, path: str, data_offset: int) -> TensorTable:
        """The tensors in data order (a zero-size tensor shares its offset with the tensor
        written after it: it goes first)."""
        offsets = np.frombuffer(self.offsets, np.uint64)
        order = np.lexsort((np.frombuffer(self.sizes, np.uint64) > 0, offsets))
        files = [(path, data_offset, False)]
        table = TensorTable(
            self.names, self.shapes, self.codes, self.codecs, self.offsets, self.sizes, files
        )
        return table if np.array_equal(order, np.arange(len(order))) else table.take(order)


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
        tensors = entries.table(self.path, h.data_offset)
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

    def _index(self, h, end: int) -> _Entries:
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
        entries = _Entries()
        for i in range(h.tensor_count):
            pos = self._entry(entries, i, pos, stop)
        self._check_order(entries)
        return entries

    def _take(self, n: int, pos: int, stop: int, what: str) -> bytes:
        if pos + n > stop:
            self.fail(
                pos,
                f"{what} needs bytes {pos:,}..{pos + n:,} but the tensor index ends at {stop:,}",
            )
        return self.f.read(n)

    def _entry(self, entries: _Entries, i: int, at: int, stop: int) -> int:
        """Append index entry i (at `at`) to `entries`; where the next one starts."""
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
        if e.dtype not in entries.codecs:
            try:
                entries.codecs[e.dtype] = by_apr_code(e.dtype)
            except UnknownCodecError:
                self.fail(at + 2 + name_len, f"{what} ({name!r}): unknown dtype code {e.dtype}")
        shape = tuple(int(d) for d in e.dims)
        problem = shape_problem(shape, MAX_NDIM)
        if problem:
            self.fail(at + 4 + name_len, f"{what} ({name!r}): {problem}")
        entries.names.add_encoded(bytes(e.name))
        entries.shapes.append(shape)
        entries.codes.append(e.dtype)
        entries.offsets.append(int(e.offset))
        entries.sizes.append(int(e.size))
        entries.at.append(at)
        return at + 4 + name_len + 8 * ndim + 16

    def _check_order(self, entries: _Entries) -> None:
        names = entries.names.frozen()
        for i in range(1, len(entries)):
            a, b = names.row(i - 1), names.row(i)
            if b == a:
                self.fail(entries.at[i], f"duplicate tensor name {names[i]!r} in the index")
            if b < a:
                self.fail(
                    entries.at[i],
                    f"tensor index not sorted by name: {names[i]!r} comes after {names[i - 1]!r}",
                )

    def _check_payloads(self, h, entries: _Entries, end: int) -> None:
        data_end = h.data_offset
        for i in range(len(entries)):
            codec, shape = entries.codecs[entries.codes[i]], entries.shapes[i]
            offset, size, at = entries.offsets[i], entries.sizes[i], entries.at[i]
            facts = codec.facts
            shape_ok = facts.flat or not facts.is_block or facts.block_size == 1
            if not shape_ok and (not shape or shape[-1] % facts.block_size):
                self.fail(
                    at,
                    f"tensor {entries.names[i]!r}: {codec.name} needs the last dimension to "
                    f"be a multiple of {facts.block_size}, shape is {shape}",
                )
            need = facts.nbytes(shape)
            if size != need:
                self.fail(
                    at,
                    f"tensor {entries.names[i]!r}: size {size:,} does not match {codec.name} "
                    f"{shape}, which needs {need:,} bytes",
                )
            if offset % ALIGNMENT:
                self.fail(at, f"tensor {entries.names[i]!r}: offset {offset:,} is not 64-aligned")
            first = h.data_offset + offset
            if first + size > end:
                self.fail(
                    end if first <= end else at,
                    f"truncated or bad offset: tensor {entries.names[i]!r} needs bytes "
                    f"{first:,}..{first + size:,} but the data ends at {end:,} "
                    f"(file size {self.size:,})",
                    TruncatedError,
                )
            data_end = max(data_end, first + align(size))
        held = np.flatnonzero(np.frombuffer(entries.sizes, np.uint64) > 0)
        by_offset = held[np.argsort(np.frombuffer(entries.offsets, np.uint64)[held], kind="stable")]
        offsets, sizes = entries.offsets, entries.sizes
        for a, b in itertools.pairwise(map(int, by_offset)):
            if offsets[a] + sizes[a] > offsets[b]:
                self.fail(
                    h.data_offset + offsets[b],
                    f"tensors {entries.names[a]!r} (bytes {offsets[a]:,}.."
                    f"{offsets[a] + sizes[a]:,}) and {entries.names[b]!r} (from "
                    f"{offsets[b]:,}) overlap (offsets relative to the data section at "
                    f"{h.data_offset:,})",
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
