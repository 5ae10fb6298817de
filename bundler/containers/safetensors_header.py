"""The SafeTensors header: the 8-byte length prefix (a Construct schema), parsing of the JSON
header with every check the reference reader makes, and the reference writer's canonical
header bytes.

The layout is `u64 N` (little-endian), N bytes of UTF-8 JSON, then the data buffer that
tensor offsets are relative to (formats/safetensors.md).
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass, field
from typing import Any, BinaryIO

from construct import Int64ul, Struct

from bundler.codecs import by_safetensors_dtype
from bundler.errors import FormatError, TruncatedError, UsageError

#: The length prefix; the only binary framing of the format.
PREFIX = Struct("header_size" / Int64ul)
PREFIX_COMPILED = PREFIX.compile()
PREFIX_SIZE = 8
#: The reference reader refuses longer headers.
MAX_HEADER_SIZE = 100_000_000
METADATA_KEY = "__metadata__"
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


@dataclass(frozen=True)
class Entry:
    """One tensor of a header: its dtype, shape and byte range in the data buffer."""

    name: str
    dtype: str
    shape: tuple[int, ...]
    begin: int
    end: int


@dataclass(frozen=True)
class Header:
    """A parsed, validated header."""

    size: int
    #: `__metadata__` in file order; None when the key is absent or null
    metadata: dict[str, str] | None
    #: tensors in header order
    entries: list[Entry]
    #: the parser, kept to find where a key is when a later check fails
    parser: _Parser = field(repr=False, compare=False)

    @property
    def data_start(self) -> int:
        """File offset of the data buffer."""
        return PREFIX_SIZE + self.size

    def key_offset(self, key: str) -> int:
        """File offset of a top-level key's opening quote (the header start if absent)."""
        return self.parser.key_offset(key)


# ---------------------------------------------------------------- reading


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
    raw = f.read(n)
    if len(raw) != n:
        raise TruncatedError(path, PREFIX_SIZE + len(raw), "file ended while reading the header")
    return parse_header(raw, path, file_size)


def parse_header(raw: bytes, path: str | None, file_size: int) -> Header:
    """Check the N header bytes (which start at file offset 8) of a file of `file_size`."""
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise FormatError(path, PREFIX_SIZE + exc.start, "header is not valid UTF-8 text") from None
    parser = _Parser(text, path)
    try:
        metadata, entries = parser.parse_fast()
    except _Retry:
        parser.parse()  # raises the located error
        raise FormatError(path, PREFIX_SIZE, "invalid header") from None
    header = Header(len(raw), metadata, entries, parser)
    _check_layout(header, path, file_size)
    return header


class _Retry(Exception):
    """The fast parse found a problem; the scanning parse will say where."""


class _Parser:
    """The header's top-level object.

    `parse_fast` parses it in one call to the json module; when anything is wrong, `parse`
    scans it key by key so the error names the byte offset. Key offsets for errors found
    later (offsets, sizes, the convention keys) come from a scan made only then.
    """

    def __init__(self, text: str, path: str | None):
        self.text = text
        self.path = path
        self.keys: dict[str, int] | None = None  # key -> character offset, from `parse`
        self._ascii = text.isascii()
        self._mark = (0, 0)  # (character, byte) position last converted
        self.decoder = json.JSONDecoder(
            object_pairs_hook=self._object, parse_constant=self._constant
        )

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
        if pos is None:
            raise _Retry
        return FormatError(self.path, self.at(pos), problem)

    def key_offset(self, key: str) -> int:
        if self.keys is None:
            self.parse()
        assert self.keys is not None
        return self.at(self.keys[key]) if key in self.keys else PREFIX_SIZE

    def parse_fast(self) -> tuple[dict[str, str] | None, list[Entry]]:
        try:
            obj = self.decoder.decode(self.text)
        except (ValueError, RecursionError):
            raise _Retry from None
        if not isinstance(obj, dict):
            raise _Retry
        metadata: dict[str, str] | None = None
        entries: list[Entry] = []
        for key, value in obj.items():
            _check_text(key, self, None, "key")
            if key == METADATA_KEY:
                metadata = self.metadata(value, None)
            else:
                entries.append(self.entry(key, value, None))
        return metadata, entries

    @staticmethod
    def _object(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
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
        return _WS.match(self.text, i).end()

    def expect(self, i: int, chars: str, what: str) -> str:
        if i >= len(self.text):
            raise self.fail(i, f"header JSON ends where {what} was expected")
        if self.text[i] not in chars:
            raise self.fail(i, f"expected {what} in the header JSON, found {self.text[i]!r}")
        return self.text[i]

    def value(self, i: int) -> tuple[Any, int]:
        try:
            return self.decoder.raw_decode(self.text, i)
        except json.JSONDecodeError as exc:
            raise self.fail(exc.pos, f"invalid header JSON: {exc.msg}") from None
        except RecursionError:
            raise self.fail(i, "invalid header JSON: nested too deeply") from None
        except ValueError as exc:
            raise self.fail(i, f"invalid header JSON: {exc}") from None

    def parse(self) -> tuple[dict[str, str] | None, list[Entry]]:
        text = self.text
        i = self.skip(0)
        self.expect(i, "{", "'{' (the header must be a JSON object)")
        i = self.skip(i + 1)
        metadata: dict[str, str] | None = None
        seen: dict[str, int] = {}
        entries: list[Entry] = []
        if i < len(text) and text[i] == "}":
            i += 1
        else:
            while True:
                self.expect(i, '"', "a quoted key")
                start = i
                key, i = self.value(i)
                if key in seen:
                    raise self.fail(start, f"duplicate key {key!r} in the header")
                seen[key] = start
                _check_text(key, self, start, "key")
                i = self.skip(i)
                self.expect(i, ":", "':'")
                i = self.skip(i + 1)
                value, i = self.value(i)
                if key == METADATA_KEY:
                    metadata = self.metadata(value, start)
                else:
                    entries.append(self.entry(key, value, start))
                i = self.skip(i)
                if self.expect(i, ",}", "',' or '}'") == "}":
                    i += 1
                    break
                i = self.skip(i + 1)
        i = self.skip(i)
        if i != len(text):
            raise self.fail(
                i,
                f"unexpected {text[i]!r} after the header object (only spaces may pad the header)",
            )
        self.keys = seen
        return metadata, entries

    def metadata(self, value: Any, pos: int | None) -> dict[str, str] | None:
        if value is None:
            return None
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

    def entry(self, name: str, value: Any, pos: int | None) -> Entry:
        where = f"tensor {name!r}"
        if not isinstance(value, dict):
            raise self.fail(pos, f"{where}: expected an object, got {_kind(value)}")
        for name_ in ("dtype", "shape", "data_offsets"):
            if name_ not in value:
                raise self.fail(pos, f"{where}: missing field {name_!r}")
        dtype = value["dtype"]
        if dtype not in _RANK:
            raise self.fail(
                pos, f"{where}: unknown dtype {dtype!r}; valid: {', '.join(DTYPE_ORDER)}"
            )
        shape = value["shape"]
        if not isinstance(shape, list) or not all(_is_u64(s) for s in shape):
            raise self.fail(pos, f"{where}: shape must be a list of unsigned integers")
        offsets = value["data_offsets"]
        if not isinstance(offsets, list) or len(offsets) != 2 or not all(map(_is_u64, offsets)):
            raise self.fail(pos, f"{where}: data_offsets must be two unsigned integers")
        return Entry(name, dtype, tuple(shape), offsets[0], offsets[1])


def _is_u64(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool) and 0 <= v <= _U64_MAX


def _kind(v: Any) -> str:
    return {dict: "an object", list: "an array", str: "a string", bool: "a boolean"}.get(
        type(v), "null" if v is None else "a number"
    )


def checked_count(shape: tuple[int, ...]) -> int | None:
    """The element count, or None once a partial product overflows 64 bits (as the
    reference's checked multiplication fails, even when a later axis is 0)."""
    count = 1
    for s in shape:
        count *= s
        if count > _U64_MAX:
            return None
    return count


def _check_text(s: str, parser: _Parser, pos: int | None, what: str) -> None:
    """JSON escapes can spell lone surrogates, which are not text."""
    try:
        s.encode("utf-8")
    except UnicodeEncodeError:
        raise parser.fail(pos, f"{what} {s!r} holds a lone surrogate escape") from None


def _check_layout(header: Header, path: str | None, file_size: int) -> None:
    """The reference reader's rules for the data buffer: contiguous from 0, sizes from
    dtype and shape, and the last tensor ending exactly at the end of the file."""
    end = 0
    previous = None
    for e in sorted(header.entries, key=lambda e: (e.begin, e.end)):
        if e.begin != end or e.end < e.begin:
            if e.end < e.begin:
                problem = f"ends before it begins ({e.begin:,} > {e.end:,})"
            elif e.begin > end:
                problem = f"leaves a hole of {e.begin - end:,} bytes before it"
            else:
                problem = f"overlaps the data before it by {end - e.begin:,} bytes"
            after = f"tensor {previous.name!r} ends" if previous else "the data buffer starts"
            raise FormatError(
                path,
                header.key_offset(e.name),
                f"tensor {e.name!r}: data_offsets [{e.begin:,}, {e.end:,}] {problem}; "
                f"it must begin at {end:,}, where {after}",
            )
        count = checked_count(e.shape)
        bits = None if count is None else count * dtype_bits(e.dtype)
        if bits is None or bits > _U64_MAX:
            raise FormatError(
                path,
                header.key_offset(e.name),
                f"tensor {e.name!r}: shape {list(e.shape)} overflows a 64-bit size",
            )
        if bits % 8:
            raise FormatError(
                path,
                header.key_offset(e.name),
                f"tensor {e.name!r}: {count:,} {e.dtype} values are not a whole number of bytes",
            )
        if e.end - e.begin != bits // 8:
            raise FormatError(
                path,
                header.key_offset(e.name),
                f"tensor {e.name!r}: {e.dtype} {list(e.shape)} needs {bits // 8:,} bytes "
                f"but data_offsets [{e.begin:,}, {e.end:,}] span {e.end - e.begin:,}",
            )
        end = e.end
        previous = e
    data_end = header.data_start + end
    if data_end > file_size:
        last = previous
        assert last is not None
        raise TruncatedError(
            path,
            header.data_start + last.begin,
            f"truncated: tensor {last.name!r} needs bytes {header.data_start + last.begin:,}.."
            f"{data_end:,} but the file ends at {file_size:,}",
        )
    if data_end < file_size:
        raise FormatError(
            path,
            data_end,
            f"{file_size - data_end:,} unexpected bytes after the last tensor "
            f"(the data ends at {data_end:,}, the file at {file_size:,})",
        )


# ---------------------------------------------------------------- writing


@dataclass(frozen=True)
class Planned:
    """A tensor as it is stored: name, SafeTensors dtype, stored shape and byte count."""

    name: str
    dtype: str
    shape: tuple[int, ...]
    nbytes: int


def layout(tensors: list[Planned]) -> list[Planned]:
    """The reference writer's data order."""
    return sorted(tensors, key=lambda t: layout_key(t.name, t.dtype))


def build_header(metadata: dict[str, str] | None, tensors: list[Planned]) -> bytes:
    """Prefix plus header bytes, exactly as the reference writer makes them for `tensors`
    laid out in `layout` order: compact JSON, `__metadata__` first (omitted when None), each
    entry's keys in the order dtype, shape, data_offsets, spaces up to a multiple of 8."""
    obj: dict[str, Any] = {}
    if metadata is not None:
        obj[METADATA_KEY] = metadata
    offset = 0
    for t in layout(tensors):
        if t.name == METADATA_KEY or t.name in obj:
            problem = "is reserved" if t.name == METADATA_KEY else "is used twice"
            raise UsageError(f"tensor name {t.name!r} {problem} in SafeTensors")
        obj[t.name] = {"dtype": t.dtype, "shape": list(t.shape), "data_offsets": [offset]}
        offset += t.nbytes
        obj[t.name]["data_offsets"].append(offset)
    text = json.dumps(obj, separators=(",", ":"), ensure_ascii=False, allow_nan=False)
    try:
        body = text.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise UsageError(f"SafeTensors header text is not valid Unicode: {exc}") from None
    body += b" " * (-len(body) % 8)
    if len(body) > MAX_HEADER_SIZE:
        raise UsageError(
            f"SafeTensors header would be {len(body):,} bytes; readers refuse more than "
            f"{MAX_HEADER_SIZE:,}"
        )
    return PREFIX_COMPILED.build({"header_size": len(body)}) + body
