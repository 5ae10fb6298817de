"""The main graph's large float initializers of a serialized ONNX model, found in the
protobuf wire format, so that the model can be parsed without their data: each keeps its
`raw_data` bytes in the file (a mapping of it) until they are needed.

Only the layout every exporter writes is taken apart: one `graph` field in the model, and
in it initializers holding one `raw_data` field. Anything else (a field repeated, groups,
a length past its message's end...) makes `split` answer None and the model is parsed
whole, which reports what is wrong with it.
"""

from __future__ import annotations

import math
import sys
from dataclasses import dataclass
from typing import Any

import numpy as np

#: ModelProto.graph, GraphProto.initializer, TensorProto.data_type and raw_data.
MODEL_GRAPH, GRAPH_INITIALIZER, TENSOR_DATA_TYPE, TENSOR_RAW_DATA = 7, 5, 2, 9
#: Element types whose bytes are read in place: FLOAT and FLOAT16 (the weights quantized).
IN_PLACE_TYPES = frozenset((1, 10))
#: Initializers with fewer bytes of data than this are parsed as usual.
MIN_IN_PLACE = 1 << 16
#: Protobuf wire types: varint, 64-bit, length-delimited, 32-bit.
VARINT, I64, LEN, I32 = 0, 1, 2, 5


class _Odd(Exception):
    """The bytes are not laid out as `split` expects."""


@dataclass(frozen=True)
class InPlace:
    """An initializer of the main graph whose `raw_data` was left in the file."""

    index: int  # into graph.initializer
    offset: int
    length: int


def split(data: memoryview) -> tuple[bytes, list[InPlace]] | None:
    """The model `data` without the `raw_data` of its large float initializers of the main
    graph, and where those bytes are; None when it has none, or when `data` is not laid
    out as expected (the caller then parses it whole)."""
    if sys.byteorder != "little":  # raw_data is little-endian: read in place only as is
        return None
    try:
        return _split(data)
    except _Odd:
        return None


def _split(data: memoryview) -> tuple[bytes, list[InPlace]] | None:
    graph = [f for f in _fields(data, 0, len(data)) if f[0] == MODEL_GRAPH]
    if len(graph) != 1 or graph[0][1] != LEN:
        return None
    _, _, start, body, end = graph[0]
    parts: list[bytes | memoryview] = []
    found: list[InPlace] = []
    index = 0
    done = body
    for number, wire, at, value, stop in _fields(data, body, end):
        if number != GRAPH_INITIALIZER or wire != LEN:
            continue
        raw = _raw_data(data, value, stop)
        if raw is not None:
            raw_at, raw_value, raw_stop = raw
            parts += [data[done:at], *_length_delimited(GRAPH_INITIALIZER, [
                data[value:raw_at], data[raw_stop:stop]
            ])]  # fmt: skip
            found.append(InPlace(index, raw_value, raw_stop - raw_value))
            done = stop
        index += 1
    if not found:
        return None
    parts.append(data[done:end])
    graph_bytes = b"".join(parts)
    head = data[:start].tobytes() + _tag(MODEL_GRAPH, LEN) + _varint(len(graph_bytes))
    return head + graph_bytes + data[end:].tobytes(), found


def _raw_data(data: memoryview, start: int, end: int) -> tuple[int, int, int] | None:
    """(field start, value start, end) of the one raw_data field of the TensorProto at
    data[start:end], when it is of an in-place type and large; else None."""
    raw, data_type = [], None
    for number, wire, at, value, stop in _fields(data, start, end):
        if number == TENSOR_RAW_DATA:
            raw.append((wire, at, value, stop))
        elif number == TENSOR_DATA_TYPE and wire == VARINT:
            data_type = _read_varint(data, value, stop)[0]
    if len(raw) != 1 or raw[0][0] != LEN or data_type not in IN_PLACE_TYPES:
        return None
    _, at, value, stop = raw[0]
    return (at, value, stop) if stop - value >= MIN_IN_PLACE else None


def _length_delimited(number: int, pieces: list[memoryview]) -> list[bytes | memoryview]:
    return [_tag(number, LEN) + _varint(sum(len(p) for p in pieces)), *pieces]


def _fields(data: memoryview, start: int, end: int):
    """(number, wire type, field start, value start, field end) of each field of the
    message at data[start:end]."""
    at = start
    while at < end:
        key, value = _read_varint(data, at, end)
        number, wire = key >> 3, key & 7
        if number == 0:
            raise _Odd
        if wire == VARINT:
            stop = _read_varint(data, value, end)[1]
        elif wire == I64:
            stop = value + 8
        elif wire == I32:
            stop = value + 4
        elif wire == LEN:
            length, value = _read_varint(data, value, end)
            stop = value + length
        else:  # groups (deprecated) and invalid wire types
            raise _Odd
        if stop > end:
            raise _Odd
        yield number, wire, at, value, stop
        at = stop


def _read_varint(data: memoryview, at: int, end: int) -> tuple[int, int]:
    """(value, position after it) of the varint at data[at]."""
    result = shift = 0
    while True:
        if at >= end or shift > 63:
            raise _Odd
        byte = data[at]
        at += 1
        result |= (byte & 0x7F) << shift
        if byte < 0x80:
            return result, at
        shift += 7


def _tag(number: int, wire: int) -> bytes:
    return _varint(number << 3 | wire)


def _varint(value: int) -> bytes:
    out = bytearray()
    while value >= 0x80:
        out.append(value & 0x7F | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


class LeftInFile:
    """The initializers `split` left in the file, once the rest is parsed into `model`:
    each one's array, read from a private mapping of the file (`mapping`), until its
    `raw_data` is put back."""

    def __init__(self, mapping: Any, model: Any, found: list[InPlace]):
        self.mapping = mapping
        self.arrays: dict[int, np.ndarray] = {}
        self.ranges: dict[int, tuple[int, int]] = {}
        self.protos: dict[int, Any] = {}  # held, so that no other object takes an id
        initializers = model.graph.initializer
        for entry in found:
            if entry.index >= len(initializers):
                raise _Odd
            proto = initializers[entry.index]
            dtype = np.dtype(np.float32 if proto.data_type == 1 else np.float16)
            count = math.prod(proto.dims)
            if (
                proto.data_type not in IN_PLACE_TYPES
                or proto.HasField("raw_data")
                or proto.data_location != 0
                or any(d < 0 for d in proto.dims)
                or count * dtype.itemsize != entry.length
            ):
                raise _Odd
            array = np.frombuffer(mapping, dtype, count, entry.offset)
            self.arrays[id(proto)] = array.reshape(tuple(proto.dims))
            self.ranges[id(proto)] = (entry.offset, entry.length)
            self.protos[id(proto)] = proto

    def array(self, proto: Any) -> np.ndarray | None:
        """The values of `proto` when its data was left in the file (None otherwise),
        aligned for the compiled kernels (copied when its bytes in the file are not)."""
        found = self._in_file(proto)
        return found if found is None or found.flags.aligned else found.copy()

    def range(self, proto: Any) -> tuple[int, int] | None:
        """(offset, length) of `proto`'s data in the file, when it was left there."""
        key = id(proto)
        return self.ranges[key] if self.protos.get(key) is proto else None

    def _in_file(self, proto: Any) -> np.ndarray | None:
        key = id(proto)
        return self.arrays[key] if self.protos.get(key) is proto else None

    def restore(self, model: Any) -> None:
        """Put the data back into each of these initializers still in `model`'s graph."""
        for proto in model.graph.initializer:
            array = self._in_file(proto)
            if array is not None:
                proto.raw_data = array.tobytes()


def parse_in_place(mapping: Any, parse: Any) -> tuple[Any, LeftInFile | None]:
    """(model, what was left in the file) of the file mapped privately as `mapping`
    (`parse(bytes)`: the checked parse of a model); the model parsed whole when none of
    its initializers is left in the file."""
    with memoryview(mapping) as view:
        parts = split(view)
        if parts is None:
            return parse(view), None
    model = parse(parts[0])
    try:
        return model, LeftInFile(mapping, model, parts[1])
    except _Odd:  # the parse disagrees with the scan: parse it whole
        with memoryview(mapping) as view:
            return parse(view), None
