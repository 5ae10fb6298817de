"""APR v2 (aprender's container, magic `APR\\0`): read and write.

Layout, checks and conventions: formats/apr.md. The reader checks every length and offset
against the file size before reading, both CRCs (the footer CRC streamed in chunks, on by
default: `read(path, verify_footer=False)` skips it), the file length, index order and
alignment, and that no two payloads overlap. The writer streams: header, metadata and index
are computed up front, then each tensor's stored bytes are copied chunk by chunk.
"""

from __future__ import annotations

import itertools
import os
import struct
import warnings
import zlib
from dataclasses import dataclass
from typing import Any, BinaryIO

import construct
import numpy as np

from bundler.atomic import atomic_output
from bundler.bundle import Bundle, FileSource, Tensor
from bundler.codecs import Codec, by_apr_code, get
from bundler.containers import apr_metadata, typed_json
from bundler.containers.apr_schema import (
    ALIGNMENT,
    APRENDER_MAX_METADATA,
    FOOTER_SIZE,
    HEADER_COMPILED,
    HEADER_CRC_AT,
    HEADER_FIELDS,
    HEADER_SIZE,
    INDEX_ENTRY_COMPILED,
    MAGIC,
    MAX_NAME_BYTES,
    MAX_NDIM,
    MIN_ENTRY_BYTES,
    OLD_MAGICS,
    UNREADABLE_FLAGS,
    VERSION,
    Flags,
    align,
)
from bundler.errors import (
    AprCompatibilityWarning,
    BundlerError,
    BundlerIOError,
    FileNotFound,
    FormatError,
    TruncatedError,
    UnknownCodecError,
    UnsupportedFormatError,
    UsageError,
)

NAME = "apr"
EXTENSIONS = ("apr",)

#: Bytes read at a time when the footer CRC is computed.
CRC_CHUNK = 4 << 20
#: Byte offset of each header field: where an error about that field points.
_AT = {name: at for name, (at, _) in HEADER_FIELDS.items()}


def sniff(head: bytes) -> bool:
    """True for APR files, the old v1/early-v2 magics included (read refuses those)."""
    return head[:4] == MAGIC or head[:4] in OLD_MAGICS


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


# ---------------------------------------------------------------------------------- read


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
        with open(path, "rb") as f:
            return _Reader(path, f, os.fstat(f.fileno()).st_size).read(verify_footer)
    except BundlerError:
        raise
    except FileNotFoundError:
        raise FileNotFound(path) from None
    except IsADirectoryError:
        raise FormatError(path, None, "is a directory, not an APR file") from None
    except OSError as exc:
        raise BundlerIOError(f"{path}: {exc.strerror or exc}") from None
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
        info: dict[str, Any] = {"flags": h.flags, "version": (h.major, h.minor)}
        if not typed:  # a file aprender wrote: keep its JSON for an identical rewrite
            info["metadata_json"] = raw_meta.decode("utf-8")
            info["metadata_snapshot"] = typed_json.dumps(md)
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


# --------------------------------------------------------------------------------- write


def write(
    bundle: Bundle,
    path: str | os.PathLike[str],
    *,
    aprender: bool = False,
    force: bool = True,
    **options: Any,
) -> None:
    """Write `bundle` as APR v2.

    With `aprender=True` refuse (UsageError) anything aprender itself cannot read; otherwise
    warn (AprCompatibilityWarning) when the file uses this project's extension codes.
    """
    if options:
        raise UsageError(f"unknown APR write options: {', '.join(sorted(options))}")
    tensors = list(bundle.tensors.values())
    if len(tensors) > 0xFFFFFFFF:
        raise UsageError(f"{len(tensors):,} tensors; APR allows at most 2^32 - 1")
    _check_tensors(tensors)
    _check_compatibility(tensors, aprender)
    meta = _metadata_bytes(bundle, tensors)
    if len(meta) > APRENDER_MAX_METADATA:
        message = (
            f"the metadata JSON is {len(meta):,} bytes; aprender reads at most "
            f"{APRENDER_MAX_METADATA:,}"
        )
        if aprender:
            raise UsageError(message)
        warnings.warn(message, AprCompatibilityWarning, stacklevel=2)
    if len(meta) > 0xFFFFFFFF:
        raise UsageError(f"the metadata JSON is {len(meta):,} bytes; APR allows at most 4 GiB")

    offsets, cursor = [], 0
    for t in tensors:
        offsets.append(cursor)
        cursor += align(t.nbytes)
    index = b"".join(
        _entry_bytes(t, off)
        for t, off in sorted(zip(tensors, offsets, strict=True), key=lambda p: p[0].name.encode())
    )
    index_offset = HEADER_SIZE + align(len(meta))
    data_offset = index_offset + align(len(index))
    header = _header_bytes(_flags(bundle), len(tensors), len(meta), index_offset, data_offset)

    with atomic_output(path, force=force) as f:
        out = _CrcWriter(f)
        out.write(header)
        out.write(meta)
        out.pad(len(meta))
        out.write(index)
        out.pad(len(index))
        for t in tensors:
            out.pad(_copy_tensor(out, t))
        f.write(out.crc.to_bytes(4, "little"))


class _CrcWriter:
    """A file writer that keeps the CRC32 of everything written."""

    def __init__(self, f: BinaryIO):
        self.f = f
        self.crc = 0

    def write(self, data: Any) -> None:
        self.f.write(data)
        self.crc = zlib.crc32(data, self.crc)

    def pad(self, n: int) -> None:
        extra = align(n) - n
        if extra:
            self.write(bytes(extra))


def _copy_tensor(out: _CrcWriter, t: Tensor) -> int:
    want = t.nbytes
    done = 0
    for chunk in t.iter_raw():
        data = np.ascontiguousarray(chunk).view(np.uint8).reshape(-1)
        done += data.size
        if done > want:
            break
        out.write(memoryview(data))
    if done != want:
        raise UsageError(
            f"tensor {t.name!r}: its source holds {'more than ' if done > want else ''}"
            f"{done:,} bytes but {t.codec.name} {t.shape} needs {want:,}"
        )
    return done


def _check_tensors(tensors: list[Tensor]) -> None:
    for t in tensors:
        if t.codec.facts.apr_code is None:
            raise UsageError(
                f"tensor {t.name!r}: codec {t.codec.name} has no APR dtype code, so it "
                "cannot be stored in an APR file"
            )
        if len(t.name.encode("utf-8")) > MAX_NAME_BYTES:
            raise UsageError(
                f"tensor name {t.name[:40]!r}... is {len(t.name.encode()):,} bytes; APR "
                f"allows at most {MAX_NAME_BYTES}"
            )
        if len(t.shape) > MAX_NDIM:
            raise UsageError(
                f"tensor {t.name!r} has {len(t.shape)} dimensions; APR allows at most {MAX_NDIM}"
            )


def non_native(tensors: list[Tensor]) -> dict[str, list[str]]:
    """Tensors whose codec aprender cannot read, grouped by codec name."""
    found: dict[str, list[str]] = {}
    for t in tensors:
        if not t.codec.facts.apr_native:
            found.setdefault(t.codec.name, []).append(t.name)
    return found


def _describe(found: dict[str, list[str]]) -> str:
    parts = []
    for codec, names in found.items():
        shown = ", ".join(repr(n) for n in names[:5])
        more = f" and {len(names) - 5} more" if len(names) > 5 else ""
        parts.append(f"{codec} (APR code {get(codec).facts.apr_code}): {shown}{more}")
    return "; ".join(parts)


def _check_compatibility(tensors: list[Tensor], aprender: bool) -> None:
    found = non_native(tensors)
    if not found:
        return
    detail = _describe(found)
    if aprender:
        raise UsageError(
            "aprender cannot read these tensors (it knows F32, F16, BF16, F64, I32, I64, I8, "
            f"U8, Q4_K, Q6_K, AprQ4, AprQ8): {detail}; convert them to one of those codecs"
        )
    warnings.warn(
        f"this APR file uses this project's dtype codes, which aprender cannot read: {detail}"
        " (write with aprender=True to refuse them)",
        AprCompatibilityWarning,
        stacklevel=3,
    )


def _metadata_bytes(bundle: Bundle, tensors: list[Tensor]) -> bytes:
    info = bundle.format_info if bundle.format == NAME else {}
    original = info.get("metadata_json")
    if original is not None and info.get("metadata_snapshot") == typed_json.dumps(bundle.metadata):
        return original.encode("utf-8")
    return apr_metadata.dumps(bundle.metadata, tensors)


def _flags(bundle: Bundle) -> int:
    flags = bundle.format_info.get("flags", 0) if bundle.format == NAME else 0
    flags &= Flags.KNOWN & ~Flags.COLUMN_MAJOR
    for bit, _ in UNREADABLE_FLAGS:
        flags &= ~bit
    return flags | Flags.ROW_MAJOR


def _entry_bytes(t: Tensor, offset: int) -> bytes:
    name = t.name.encode("utf-8")
    return INDEX_ENTRY_COMPILED.build(
        {
            "name_len": len(name),
            "name": name,
            "dtype": t.codec.facts.apr_code,
            "ndim": len(t.shape),
            "dims": list(t.shape),
            "offset": offset,
            "size": t.nbytes,
        }
    )


def _header_bytes(flags: int, count: int, meta_size: int, index_at: int, data_at: int) -> bytes:
    fields = {
        "magic": MAGIC,
        "major": VERSION[0],
        "minor": VERSION[1],
        "flags": flags,
        "tensor_count": count,
        "metadata_offset": HEADER_SIZE,
        "metadata_size": meta_size,
        "tensor_index_offset": index_at,
        "data_offset": data_at,
        "header_crc": 0,
        "reserved": bytes(20),
    }
    fields["header_crc"] = header_crc(HEADER_COMPILED.build(fields))
    return HEADER_COMPILED.build(fields)
