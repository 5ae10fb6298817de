"""GGUF array bodies and value bytes, both directions, without Construct's per-element Array.

Numeric and bool arrays are sliced with `np.frombuffer`; string arrays' lengths are scanned
by a compiled loop (`strings_kernel`). Every count and length is checked against the bytes
left in the file before anything is allocated. Strings are UTF-8; bytes that are not valid
UTF-8 are kept as surrogate escapes (PEP 383) so that they are written back unchanged.
"""

from __future__ import annotations

import struct
from typing import Any

import numpy as np

from bundler.bundle import Value, ValueType
from bundler.codecs.kernels import Compiled, first_call
from bundler.containers.gguf.schema import MAX_NESTING
from bundler.containers.limits import NestedBudget
from bundler.errors import FormatError, TruncatedError, UsageError

ENCODING = "utf-8"
ERRORS = "surrogateescape"

#: Bytes of one element of each fixed-size value type.
ITEM_BYTES = {t: dt.itemsize for t in ValueType if (dt := t.numpy_dtype) is not None}
_ARRAY_HEAD = 4 + 8


def item_dtype(t: ValueType, big_endian: bool) -> np.dtype:
    """The numpy dtype of one stored element of type `t` in a file of the given byte order."""
    dt = t.numpy_dtype
    if t == ValueType.BOOL:
        return np.dtype(np.uint8)
    return dt.newbyteorder(">") if big_endian and dt.itemsize > 1 else dt


def value_type(code: int, path: str, at: int, what: str) -> ValueType:
    """The ValueType of `code`, or a FormatError naming `what`."""
    try:
        return ValueType(code)
    except ValueError:
        raise FormatError(
            path, at, f"{what} has value type {code}, valid types are 0..12"
        ) from None


def decode_str(data: bytes) -> str:
    return data.decode(ENCODING, ERRORS)


def encode_str(text: str) -> bytes:
    try:
        return text.encode(ENCODING, ERRORS)
    except UnicodeEncodeError as exc:
        raise UsageError(f"{text[:40]!r} cannot be stored as UTF-8: {exc.reason}") from None


# ------------------------------------------------------------------------------ reading


def read_array(
    buf: Any,
    pos: int,
    end: int,
    item: ValueType,
    count: int,
    big_endian: bool,
    path: str,
    what: str,
    depth: int = 0,
    budget: NestedBudget | None = None,
    decode: bool = True,
) -> tuple[Value, int]:
    """Parse the `count` elements of an array starting at `pos`; returns (value, end pos).

    `budget` counts nested arrays across calls (one per file) against the shared limit;
    `decode=False` walks string arrays without decoding them (each string read as "")."""
    left = end - pos
    if item == ValueType.STRING:
        if count * 8 > left:
            raise _too_long(path, pos, what, count, "strings", count * 8, left)
        return _read_strings(buf, pos, end, count, big_endian, path, what, decode)
    if item == ValueType.ARRAY:
        if depth + 1 >= MAX_NESTING:
            raise FormatError(path, pos, f"{what}: arrays nested more than {MAX_NESTING} deep")
        if count * _ARRAY_HEAD > left:
            raise _too_long(path, pos, what, count, "arrays", count * _ARRAY_HEAD, left)
        budget = budget or NestedBudget()
        problem = budget.take(count)
        if problem:
            raise FormatError(path, pos - _ARRAY_HEAD, f"{what}: {problem}")
        return _read_nested(buf, pos, end, count, big_endian, path, what, depth, budget, decode)
    size = ITEM_BYTES[item] * count
    if size > left:
        raise _too_long(path, pos, what, count, item.name, size, left)
    raw = np.frombuffer(buf, item_dtype(item, big_endian), count, pos)
    arr = raw != 0 if item == ValueType.BOOL else raw.astype(item.numpy_dtype, copy=True)
    return Value(ValueType.ARRAY, arr, item), pos + size


def _too_long(path, pos, what, count, kind, need, left) -> FormatError:
    return TruncatedError(
        path,
        pos,
        f"{what}: array of {count:,} {kind} needs at least {need:,} bytes "
        f"but only {left:,} are left in the file",
    )


#: Bytes of a string array copied out of the map at a time (slicing bytes is twice as fast
#: as slicing an mmap); bounded so a lying count cannot make the reader copy the file.
STRING_WINDOW = 16 << 20


def _read_strings(buf, pos, end, count, big_endian, path, what, decode) -> tuple[Value, int]:
    unpack = struct.Struct(">Q" if big_endian else "<Q").unpack_from
    out: list[str] = []
    base = pos  # file offset of data[0]
    data = buf[pos : min(end, pos + _window(count))]
    at = i = 0
    while True:
        starts, at = _starts(data, at, count - i, big_endian)  # a run of whole strings
        i += len(starts)
        out += _decoded(data, starts, at) if decode else [""] * len(starts)
        if i == count:
            return Value(ValueType.ARRAY, out, ValueType.STRING), base + at
        base, data, at = _refill(buf, base + at, end, _window(count - i))
        if len(data) < 8:
            raise TruncatedError(path, base, f"{what}: truncated at string {i:,} of {count:,}")
        (n,) = unpack(data, 0)
        if n > end - (base + 8):
            raise TruncatedError(
                path,
                base,
                f"{what}: string {i:,} claims {n:,} bytes but only {end - (base + 8):,} are left",
            )
        if n > len(data) - 8:
            base, data, at = _refill(buf, base, end, 8 + max(n, _window(count - i)))


def _starts(data: bytes, at: int, most: int, big_endian: bool) -> tuple[np.ndarray, int]:
    """Where each of the next strings (up to `most`) from `at` begins, after its 8-byte
    length, while they lie wholly in `data`; and where the last of them ends."""
    starts = np.empty(max(0, min(most, (len(data) - at) // 8)), dtype=np.int64)
    end = np.empty(1, dtype=np.int64)
    found = _STRING_STARTS(np.frombuffer(data, np.uint8), at, most, big_endian, starts, end)
    return starts[:found], int(end[0])


def _kernel(name: str) -> Any:
    """The compiled loop `name` of `strings_kernel`, its first call announced."""
    compiled = Compiled("bundler.containers.gguf.strings_kernel", name)
    return first_call(compiled, "GGUF string scan", threaded=False)


_STRING_STARTS = _kernel("string_starts")
_JOINED_TEXT = _kernel("joined_text")
_LAID_OUT = _kernel("laid_out")


#: From this many strings on, a run is decoded at once (see `_decoded`).
JOINED_FROM = 64


def _decoded(data: bytes, starts: np.ndarray, stop: int) -> list[str]:
    """The strings of `data` beginning at `starts` (each after its 8-byte length, the next
    one's length or `stop` ending it). A long run without NUL bytes is decoded as one text,
    the strings joined by NULs and split there: the same strings, since no UTF-8 sequence
    spans a NUL byte (each invalid byte is escaped alone either way)."""
    if len(starts) == 0:
        return []
    if len(starts) >= JOINED_FROM:
        first = int(starts[0])
        text = np.empty(stop - first, np.uint8)  # the strings and a NUL between each two
        n = _JOINED_TEXT(np.frombuffer(data, np.uint8), starts, stop, text)
        if n >= 0:
            return text[:n].tobytes().decode(ENCODING, ERRORS).split("\0")
    bounds = starts.tolist()
    ends = [*(s - 8 for s in bounds[1:]), stop]
    return [data[s:e].decode(ENCODING, ERRORS) for s, e in zip(bounds, ends, strict=True)]


def _window(strings_left: int) -> int:
    """Bytes worth copying for the strings left: about 24 each (tokens are short), capped."""
    return min(STRING_WINDOW, strings_left * 24 + 4096)


def _refill(buf, pos: int, end: int, size: int) -> tuple[int, bytes, int]:
    """A new window of `size` bytes of the map from `pos` (fewer at the end of the file)."""
    return pos, buf[pos : min(end, pos + size)], 0


def _read_nested(
    buf, pos, end, count, big_endian, path, what, depth, budget, decode
) -> tuple[Value, int]:
    head = struct.Struct(">IQ" if big_endian else "<IQ")
    items: list[Value] = []
    for i in range(count):
        if pos + _ARRAY_HEAD > end:
            raise TruncatedError(path, pos, f"{what}: truncated at nested array {i:,}")
        code, n = head.unpack_from(buf, pos)
        sub = value_type(code, path, pos, f"{what}[{i}]")
        value, pos = read_array(
            buf, pos + _ARRAY_HEAD, end, sub, n, big_endian, path, f"{what}[{i}]", depth + 1,
            budget, decode,
        )  # fmt: skip
        items.append(value)
    return Value(ValueType.ARRAY, items, ValueType.ARRAY), pos


# ------------------------------------------------------------------------------ writing


def array_body(value: Value, big_endian: bool, key: str) -> bytes:
    """The bytes of an array's elements (after its item type and count)."""
    try:
        item = ValueType(value.item_type)
    except ValueError:
        raise UsageError(
            f"metadata {key!r}: array item type {value.item_type!r} is not a GGUF value type"
        ) from None
    if item == ValueType.STRING:
        joined = _joined_strings(value.value, big_endian)
        if joined is not None:
            return joined
        pack = struct.Struct(">Q" if big_endian else "<Q").pack
        parts = []
        for s in value.value:
            if not isinstance(s, str):
                raise UsageError(f"metadata {key!r}: string array holds a {type(s).__name__}")
            b = encode_str(s)
            parts.append(pack(len(b)))
            parts.append(b)
        return b"".join(parts)
    if item == ValueType.ARRAY:
        head = struct.Struct(">IQ" if big_endian else "<IQ").pack
        parts = []
        for sub in value.value:
            if not isinstance(sub, Value) or sub.type != ValueType.ARRAY:
                raise UsageError(f"metadata {key!r}: a nested array holds arrays (Values)")
            parts.append(head(int(sub.item_type), array_len(sub)))
            parts.append(array_body(sub, big_endian, key))
        return b"".join(parts)
    return numeric_array(value.value, item, key).astype(item_dtype(item, big_endian)).tobytes()


def _joined_strings(strings: Any, big_endian: bool) -> bytes | None:
    """The body of a long array of strings none of which holds a NUL, encoded as one text
    and laid out around their lengths at once (see `_decoded`); None for any other (the
    strings are then encoded one by one, which also names a string that cannot be)."""
    if len(strings) < JOINED_FROM:
        return None
    try:
        text = np.frombuffer("\0".join(strings).encode(ENCODING, ERRORS), np.uint8)
    except (TypeError, UnicodeEncodeError):  # an item that is not a string, or not UTF-8
        return None
    nul = np.flatnonzero(text == 0)
    n = len(strings)
    if len(nul) != n - 1:
        return None
    begins = np.concatenate(([0], nul + 1))
    lengths = np.concatenate((nul, [text.size])) - begins
    out = np.empty(text.size - (n - 1) + 8 * n, np.uint8)
    _LAID_OUT(text, begins, lengths, big_endian, out)
    return out.tobytes()


def array_len(value: Value) -> int:
    return int(np.size(value.value)) if isinstance(value.value, np.ndarray) else len(value.value)


def numeric_array(data: Any, item: ValueType, key: str) -> np.ndarray:
    """`data` as a 1-D array of `item`'s dtype, refusing values the type cannot hold."""
    arr = np.asarray(data)
    if arr.ndim != 1 and arr.size:
        # a count of len(data) and a body of arr.size values would misparse the next key
        raise UsageError(f"metadata {key!r}: {item.name} array has shape {arr.shape}, not 1-D")
    if arr.ndim != 1:
        arr = arr.reshape(0)
    if item == ValueType.BOOL:
        return arr.astype(np.uint8) != 0
    dt = item.numpy_dtype
    if arr.dtype == dt:
        return arr
    if arr.size and dt.kind in "iu":
        if arr.dtype.kind not in "iub":
            raise UsageError(f"metadata {key!r}: {item.name} array given {arr.dtype} values")
        info = np.iinfo(dt)
        if int(arr.min()) < info.min or int(arr.max()) > info.max:
            raise UsageError(f"metadata {key!r}: values out of range for {item.name}")
    return arr.astype(dt)
