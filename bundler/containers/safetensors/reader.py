"""SafeTensors reading: the JSON header parsed with every check the reference reader makes,
one file or a sharded checkpoint (its index or directory); tensors stay in the file."""

from __future__ import annotations

import json
import mmap
import os
from collections.abc import Iterator
from typing import Any, BinaryIO

import numpy as np

from bundler.bundle import Bundle
from bundler.containers.limits import MAX_TENSORS, shape_problem
from bundler.containers.oserrors import reading
from bundler.containers.safetensors import shards as shards
from bundler.containers.safetensors.convention import (
    META_KEY,
    bundle_parts,
)
from bundler.containers.safetensors.details import SafetensorsDetails
from bundler.containers.safetensors.schema import (
    _RANK,
    _U64_MAX,
    _WS,
    DTYPE_ORDER,
    MAX_DIMS,
    MAX_HEADER_SIZE,
    METADATA_KEY,
    NAME,
    PREFIX_COMPILED,
    PREFIX_SIZE,
    Entries,
    Header,
    checked_count,
    dtype_bits,
)
from bundler.errors import (
    FormatError,
    TruncatedError,
)
from bundler.tensortable import TensorTable


def sniff(head: bytes) -> bool:
    """True when `head` starts with a plausible header length followed by '{'."""
    if len(head) <= PREFIX_SIZE:
        return False
    n = int.from_bytes(head[:PREFIX_SIZE], "little")
    if not 2 <= n <= MAX_HEADER_SIZE:
        return False
    return head[PREFIX_SIZE : PREFIX_SIZE + n].lstrip(b" \t\r\n")[:1] == b"{"


def sniff_path(path: str) -> bool:
    """True for what `read` takes besides SafeTensors files: a directory holding a checkpoint,
    or a `.json` file holding a JSON object (a sharded checkpoint's index)."""
    if os.path.isdir(path):
        try:
            return any(n.endswith((".safetensors", shards.INDEX_SUFFIX)) for n in os.listdir(path))
        except OSError:
            return False
    if not path.endswith(".json"):
        return False
    try:
        with open(path, "rb") as f:
            return shards.looks_like_index(f.read(64))
    except OSError:
        return False


def read_header(f: BinaryIO, path: str, file_size: int) -> Header:
    """Read and check the header of the open file `f` (at offset 0) of `file_size` bytes.

    Every length is checked against the file size before anything is allocated.
    """
    prefix = f.read(PREFIX_SIZE)
    if len(prefix) < PREFIX_SIZE:
        raise TruncatedError(
            path, 0, f"truncated: the 8-byte header length needs 8 bytes, the file has {file_size}"
        )
    n = PREFIX_COMPILED.parse(prefix).header_size
    if n > MAX_HEADER_SIZE:
        raise FormatError(
            path, 0, f"header length {n:,} exceeds the limit of {MAX_HEADER_SIZE:,} bytes"
        )
    if PREFIX_SIZE + n > file_size:
        raise TruncatedError(
            path,
            PREFIX_SIZE,
            f"truncated: the header needs bytes 8..{PREFIX_SIZE + n:,} "
            f"but the file ends at {file_size:,}",
        )
    # decoded straight from the mapped file: the header's bytes are never copied
    with mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as mm, memoryview(mm) as view:
        if len(view) < PREFIX_SIZE + n:
            raise TruncatedError(path, len(view), "file ended while reading the header")
        with view[PREFIX_SIZE : PREFIX_SIZE + n] as raw:
            text = _decode(raw, path)
    return _parse_text(text, n, path, file_size)


def parse_header(raw: bytes, path: str | None, file_size: int) -> Header:
    """Check the N header bytes (which start at file offset 8) of a file of `file_size`."""
    return _parse_text(_decode(raw, path), len(raw), path, file_size)


def _decode(raw: bytes | memoryview, path: str | None) -> str:
    try:
        return str(raw, "utf-8")
    except UnicodeDecodeError as exc:
        raise FormatError(path, PREFIX_SIZE + exc.start, "header is not valid UTF-8 text") from None


def _parse_text(text: str, size: int, path: str | None, file_size: int) -> Header:
    parser = _Parser(text, path)
    metadata, entries = parser.parse()
    if len(entries) > MAX_TENSORS:
        raise FormatError(
            path, PREFIX_SIZE, f"{len(entries):,} tensors, more than the limit of {MAX_TENSORS:,}"
        )
    header = Header(size, metadata, entries, parser)
    _check_layout(header, path, file_size)
    return header


class _Parser:
    """The header's top-level object, walked key by key: each tensor entry goes straight
    into the `Entries` columns, and every error names its byte offset. Key offsets for
    errors found later (offsets, sizes, the convention keys) come from a new walk made
    only then."""

    def __init__(self, text: str, path: str | None):
        self.text = text
        self.path = path
        self._ascii = text.isascii()
        self._mark = (0, 0)  # (character, byte) position last converted
        self.decoder = json.JSONDecoder(
            object_pairs_hook=self._object, parse_constant=self._constant
        )
        #: the key being read, and where it starts
        self.current: tuple[str, int] | None = None
        self.metadata_at: int | None = None

    def at(self, pos: int) -> int:
        """File offset of character `pos` of the header text (incremental: entries are
        converted in increasing order, so a large non-ASCII header stays linear)."""
        if self._ascii:
            return PREFIX_SIZE + pos
        char, byte = self._mark if pos >= self._mark[0] else (0, 0)
        byte += len(self.text[char:pos].encode("utf-8", "surrogatepass"))
        self._mark = (pos, byte)
        return PREFIX_SIZE + byte

    def fail(self, pos: int | None, problem: str) -> FormatError:
        return FormatError(self.path, None if pos is None else self.at(pos), problem)

    def key_offset(self, key: str, occurrence: int = 1) -> int:
        """File offset of the `occurrence`-th top-level `key` (the header start if absent)."""
        for k, start, _ in self.walk(values=False):
            if k == key:
                occurrence -= 1
                if not occurrence:
                    return self.at(start)
        return PREFIX_SIZE

    @staticmethod
    def _object(pairs: list[tuple[str, Any]]) -> dict[str, Any] | _Fields:
        # A well-formed tensor entry becomes a small tuple at once.
        if len(pairs) == 3 and {k for k, _ in pairs} == _TENSOR_KEYS:
            compact = _compact(dict(pairs))
            if compact is not None:
                return compact
        out: dict[str, Any] = {}
        for key, value in pairs:
            if key in out:
                raise ValueError(f"duplicate key {key!r}")
            out[key] = value
        return out

    @staticmethod
    def _constant(name: str) -> Any:
        raise ValueError(f"{name} is not JSON")

    def skip(self, i: int) -> int:
        text = self.text
        if i < len(text) and text[i] in _SPACE:
            return _WS.match(text, i).end()
        return i

    def expect(self, i: int, chars: str, what: str) -> str:
        if i >= len(self.text):
            raise self.fail(i, f"header JSON ends where {what} was expected")
        if self.text[i] not in chars:
            raise self.fail(i, f"expected {what} in the header JSON, found {self.text[i]!r}")
        return self.text[i]

    def value(self, i: int, key: bool = False) -> tuple[Any, int]:
        try:
            if key:
                return _scanstring(self.text, i + 1)
            return self.decoder.raw_decode(self.text, i)
        except json.JSONDecodeError as exc:
            raise self.fail(exc.pos, f"invalid header JSON: {exc.msg}") from None
        except RecursionError:
            raise self.fail(i, "invalid header JSON: nested too deeply") from None
        except ValueError as exc:
            raise self.fail(i, f"invalid header JSON: {exc}") from None

    def walk(self, values: bool = True) -> Iterator[tuple[str, int, Any]]:
        """Each top-level key, the character offset of its opening quote and its value (None
        unless `values`), checking the JSON syntax as it goes."""
        text = self.text
        self.current = None
        i = self.skip(0)
        self.expect(i, "{", "'{' (the header must be a JSON object)")
        i = self.skip(i + 1)
        if i < len(text) and text[i] == "}":
            i += 1
        else:
            while True:
                self.current = None
                self.expect(i, '"', "a quoted key")
                start = i
                key, i = self.value(i, key=True)
                self.current = (key, start)
                i = self.skip(i)
                self.expect(i, ":", "':'")
                i = self.skip(i + 1)
                value, i = self.value(i)
                yield key, start, value if values else None
                i = self.skip(i)
                if self.expect(i, ",}", "',' or '}'") == "}":
                    i += 1
                    break
                i = self.skip(i + 1)
        self.current = None
        i = self.skip(i)
        if i != len(text):
            raise self.fail(
                i,
                f"unexpected {text[i]!r} after the header object (only spaces may pad the header)",
            )

    def parse(self) -> tuple[dict[str, str] | None, Entries]:
        metadata: dict[str, str] | None = None
        entries = Entries()
        try:
            for key, start, value in self.walk():
                stored = _check_text(key, self, start, "key")
                if key == METADATA_KEY:
                    if self.metadata_at is not None:
                        raise self.fail(start, f"duplicate key {key!r} in the header")
                    self.metadata_at = start
                    metadata = self.metadata(value, start)
                else:
                    entries.add(stored, *self.entry(key, value, start))
                self.current = None  # read: a repeat of it is found among the entries
        except FormatError as exc:
            raise self.repeated(entries) or exc from None
        repeat = self.repeated(entries)
        if repeat is not None:
            raise repeat
        return metadata, entries

    def repeated(self, entries: Entries) -> FormatError | None:
        """The error for the first key the header repeats, up to the key being read."""
        row = entries.names.first_repeat()
        if row is not None:
            name = entries.names[row]
            return FormatError(
                self.path, self.key_offset(name, 2), f"duplicate key {name!r} in the header"
            )
        if self.current is None:
            return None
        key, start = self.current
        if key == METADATA_KEY:
            seen = self.metadata_at not in (None, start)
        else:
            seen = entries.names.find(key) is not None
        if seen:
            return self.fail(start, f"duplicate key {key!r} in the header")
        try:
            _check_text(key, self, start, "key")
        except FormatError as exc:
            return exc
        return None

    def metadata(self, value: Any, pos: int | None) -> dict[str, str] | None:
        if value is None:
            return None
        if type(value) is _Fields:  # a well-formed tensor entry under the reserved key
            raise self.fail(
                pos, "__metadata__ holds a tensor entry ('__metadata__' cannot be a tensor name)"
            )
        if not isinstance(value, dict):
            raise self.fail(pos, f"__metadata__ must be an object, got {_kind(value)}")
        for key, item in value.items():
            if not isinstance(item, str):
                hint = (
                    " ('__metadata__' cannot be a tensor name)"
                    if key in ("dtype", "shape", "data_offsets")
                    else ""
                )
                raise self.fail(
                    pos,
                    f"__metadata__ value of {key!r} must be a string, got {_kind(item)}{hint}",
                )
            _check_text(key, self, pos, "metadata key")
            _check_text(item, self, pos, "metadata value")
        return value

    def entry(self, name: str, value: Any, pos: int | None) -> _Fields:
        """The entry's (dtype, shape, begin, end), checked."""
        if type(value) is _Fields:
            return value
        where = f"tensor {name!r}"
        if not isinstance(value, dict):
            raise self.fail(pos, f"{where}: expected an object, got {_kind(value)}")
        for name_ in ("dtype", "shape", "data_offsets"):
            if name_ not in value:
                raise self.fail(pos, f"{where}: missing field {name_!r}")
        dtype = value["dtype"]
        if not isinstance(dtype, str) or dtype not in _RANK:
            raise self.fail(
                pos, f"{where}: unknown dtype {dtype!r}; valid: {', '.join(DTYPE_ORDER)}"
            )
        shape = value["shape"]
        if not isinstance(shape, list) or not all(_is_u64(s) for s in shape):
            raise self.fail(pos, f"{where}: shape must be a list of unsigned integers")
        problem = shape_problem(shape, MAX_DIMS)
        if problem:
            raise self.fail(pos, f"{where}: {problem}")
        offsets = value["data_offsets"]
        if not isinstance(offsets, list) or len(offsets) != 2 or not all(map(_is_u64, offsets)):
            raise self.fail(pos, f"{where}: data_offsets must be two unsigned integers")
        return _Fields((dtype, shape, offsets[0], offsets[1]))


class _Fields(tuple):
    """A tensor entry the object hook already checked: (dtype, shape, begin, end)."""

    __slots__ = ()


_TENSOR_KEYS = frozenset(("dtype", "shape", "data_offsets"))
_SPACE = " \t\n\r"
_scanstring = json.decoder.scanstring
#: One string object per dtype name, shared by every entry.
_DTYPES = {d: d for d in DTYPE_ORDER}


def _compact(fields: dict[str, Any]) -> _Fields | None:
    """The entry as a `_Fields` when every field is well-formed, else None (then `entry`
    says what is wrong, with its offset)."""
    dtype, shape, offsets = fields["dtype"], fields["shape"], fields["data_offsets"]
    if type(dtype) is not str or dtype not in _DTYPES:
        return None
    if type(shape) is not list or not all(map(_is_u64, shape)):
        return None
    if shape_problem(shape, MAX_DIMS) is not None:
        return None
    if type(offsets) is not list or len(offsets) != 2 or not all(map(_is_u64, offsets)):
        return None
    return _Fields((_DTYPES[dtype], tuple(shape), offsets[0], offsets[1]))


def _is_u64(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool) and 0 <= v <= _U64_MAX


def _kind(v: Any) -> str:
    return {dict: "an object", list: "an array", str: "a string", bool: "a boolean"}.get(
        type(v), "null" if v is None else "a number"
    )


def _check_text(s: str, parser: _Parser, pos: int | None, what: str) -> bytes:
    """`s` as UTF-8: JSON escapes can spell lone surrogates, which are not text."""
    try:
        return s.encode("utf-8")
    except UnicodeEncodeError:
        raise parser.fail(pos, f"{what} {s!r} holds a lone surrogate escape") from None


def _check_layout(header: Header, path: str | None, file_size: int) -> None:
    """The reference reader's rules for the data buffer: contiguous from 0, sizes from
    dtype and shape, and the last tensor ending exactly at the end of the file."""
    entries = header.entries
    begins, ends = entries.begins, entries.ends
    order = np.lexsort((np.frombuffer(ends, np.uint64), np.frombuffer(begins, np.uint64)))
    bits_of = {}
    end = 0
    previous = None
    for i in map(int, order):  # never a list of a million ints
        begin, stop = begins[i], ends[i]
        if begin != end or stop < begin:
            if stop < begin:
                problem = f"ends before it begins ({begin:,} > {stop:,})"
            elif begin > end:
                problem = f"leaves a hole of {begin - end:,} bytes before it"
            else:
                problem = f"overlaps the data before it by {end - begin:,} bytes"
            name = entries.names[i]
            after = (
                f"tensor {entries.names[previous]!r} ends"
                if previous is not None
                else "the data buffer starts"
            )
            raise FormatError(
                path,
                header.key_offset(name),
                f"tensor {name!r}: data_offsets [{begin:,}, {stop:,}] {problem}; "
                f"it must begin at {end:,}, where {after}",
            )
        shape, rank = entries.shapes[i], entries.dtypes[i]
        if rank not in bits_of:
            bits_of[rank] = dtype_bits(DTYPE_ORDER[rank])
        count = checked_count(shape)
        bits = None if count is None else count * bits_of[rank]
        if bits is None or bits > _U64_MAX or bits % 8 or stop - begin != bits // 8:
            _size_problem(header, path, i, count, bits)
        end = stop
        previous = i
    data_end = header.data_start + end
    if data_end > file_size:
        assert previous is not None
        name, start = entries.names[previous], header.data_start + begins[previous]
        raise TruncatedError(
            path,
            min(start, file_size),
            f"truncated: tensor {name!r} needs bytes {start:,}..{data_end:,} "
            f"but the file ends at {file_size:,}",
        )
    if data_end < file_size:
        raise FormatError(
            path,
            data_end,
            f"{file_size - data_end:,} unexpected bytes after the last tensor "
            f"(the data ends at {data_end:,}, the file at {file_size:,})",
        )


def _size_problem(
    header: Header, path: str | None, i: int, count: int | None, bits: int | None
) -> None:
    """Raise why entry i's byte range does not fit its dtype and shape."""
    e = header.entries[i]
    at = header.key_offset(e.name)
    if bits is None or bits > _U64_MAX:
        raise FormatError(
            path, at, f"tensor {e.name!r}: shape {list(e.shape)} overflows a 64-bit size"
        )
    if bits % 8:
        raise FormatError(
            path,
            at,
            f"tensor {e.name!r}: {count:,} {e.dtype} values are not a whole number of bytes",
        )
    raise FormatError(
        path,
        at,
        f"tensor {e.name!r}: {e.dtype} {list(e.shape)} needs {bits // 8:,} bytes "
        f"but data_offsets [{e.begin:,}, {e.end:,}] span {e.end - e.begin:,}",
    )


def read(path: str | os.PathLike[str]) -> Bundle:
    """Read a SafeTensors file, a sharded checkpoint (its index or its directory)."""
    path = os.fspath(path)
    if os.path.isdir(path):
        path = shards.entry_in_directory(path)
    head = _head(path)
    if not sniff(head) and (shards.looks_like_index(head) or path.endswith(".json")):
        return _read_sharded(path)
    return read_file(path)


def _head(path: str) -> bytes:
    with reading(path, "a SafeTensors file"), open(path, "rb") as f:
        return f.read(64)


def read_file(path: str | os.PathLike[str]) -> Bundle:
    """Read one SafeTensors file; only its header is read, tensors stay in the file."""
    path = os.fspath(path)
    with reading(path, "a SafeTensors file"), open(path, "rb") as f:
        header = read_header(f, path, os.fstat(f.fileno()).st_size)
    metadata, tensors = bundle_parts(path, header)
    info = SafetensorsDetails(
        header_size=header.size,
        metadata_object=header.metadata is not None,
        convention=META_KEY in (header.metadata or {}),
    )
    return Bundle(metadata, tensors, format=NAME, path=path, format_info=info)


def _read_sharded(index_path: str) -> Bundle:
    names, members = shards.read_index(index_path)
    if not names:
        raise FormatError(index_path, 0, "the index's weight_map lists no tensors")
    directory = os.path.dirname(index_path)
    for name in names:
        if not os.path.isfile(os.path.join(directory, name)):
            raise FormatError(index_path, None, f"shard {name!r} named in the index is missing")
    parts = []
    for name in names:
        shard_path = os.path.join(directory, name)
        part = read_file(shard_path)
        listed, held = set(members[name]), set(part.tensors)
        if listed != held:
            raise FormatError(shard_path, None, _membership_problem(listed, held))
        # Plain shards may differ in metadata (the first one's is taken); typed metadata is
        # the bundle's and must agree.
        if parts and part.format_info.convention and part.metadata != parts[0].metadata:
            raise FormatError(shard_path, None, f"its {META_KEY} differs from the first shard's")
        parts.append(part)
    tables = [part.tensors.table for part in parts]
    if all(t is not None for t in tables):
        tensors: Any = TensorTable.concat(tables)
    else:
        tensors = [t for part in parts for t in part.tensors.values()]
    info = SafetensorsDetails(
        metadata_object=parts[0].format_info.metadata_object,
        shards=tuple(names),
        shard_tensors=tuple(tuple(part.tensors) for part in parts),
    )
    return Bundle(parts[0].metadata, tensors, format=NAME, path=index_path, format_info=info)


def _membership_problem(listed: set[str], held: set[str]) -> str:
    problems = []
    if held - listed:
        problems.append(f"holds tensors {sorted(held - listed)[:5]} the index does not list for it")
    if listed - held:
        problems.append(f"lacks tensors {sorted(listed - held)[:5]} the index lists for it")
    return "; ".join(problems)
