"""The wire format of one quantized vector and of a batch (formats/vectors.md).

Little-endian, fixed headers, a CRC-32 over everything before it; every length is checked
before it is used, so truncated, padded, mislabelled or altered bytes raise DataCorrupted
naming the byte offset and the problem.
"""

from __future__ import annotations

import struct
import zlib
from typing import Any

import numpy as np

from bundler.codecs.vectors.schemes import QuantizedVector, QuantizedVectors, Scheme
from bundler.errors import DataCorrupted, InvalidScheme

VECTOR_MAGIC = b"BVQ1"
BATCH_MAGIC = b"BVB1"
VERSION = 1
#: magic, version, scheme code, zero point, reserved, dim, scale, min
_VECTOR_HEAD = struct.Struct("<4sBBbBIff")
#: magic, version, scheme code, zero point, reserved, count, dim
_BATCH_HEAD = struct.Struct("<4sBBbBII")
_CRC = struct.Struct("<I")


def vector_to_bytes(q: QuantizedVector) -> bytes:
    """One vector: a 20-byte header, the packed data, a CRC-32."""
    head = _VECTOR_HEAD.pack(
        VECTOR_MAGIC, VERSION, q.scheme.code, q.zero_point, 0, q.dim, q.scale, q.min_val
    )
    body = head + q.data.tobytes()
    return body + _CRC.pack(zlib.crc32(body))


def vectors_to_bytes(q: QuantizedVectors) -> bytes:
    """A batch of one scheme: a 16-byte header, N scales, N mins, N data rows, a CRC-32."""
    head = _BATCH_HEAD.pack(BATCH_MAGIC, VERSION, q.scheme.code, q.zero_point, 0, len(q), q.dim)
    body = b"".join(
        (head, q.scale.astype("<f4").tobytes(), q.min.astype("<f4").tobytes(), q.data.tobytes())
    )
    return body + _CRC.pack(zlib.crc32(body))


def to_bytes(q: QuantizedVector | QuantizedVectors) -> bytes:
    """The serialized form of a vector or a batch."""
    return vector_to_bytes(q) if isinstance(q, QuantizedVector) else vectors_to_bytes(q)


def from_bytes(data: Any) -> QuantizedVector | QuantizedVectors:
    """A vector or batch back from `to_bytes`; DataCorrupted for anything else."""
    buf = memoryview(data).cast("B") if not isinstance(data, bytes) else memoryview(data)
    if len(buf) < 4:
        raise _corrupt(0, f"{len(buf)} bytes: too short for a magic number")
    magic = bytes(buf[:4])
    if magic == VECTOR_MAGIC:
        return _read_vector(buf)
    if magic == BATCH_MAGIC:
        return _read_batch(buf)
    raise _corrupt(0, f"magic {magic!r} is neither {VECTOR_MAGIC!r} nor {BATCH_MAGIC!r}")


def _corrupt(offset: int | None, problem: str) -> DataCorrupted:
    return DataCorrupted(None, offset, problem)


def _header(buf: memoryview, head: struct.Struct, what: str) -> tuple:
    if len(buf) < head.size + _CRC.size:
        raise _corrupt(len(buf), f"truncated: a {what} needs at least {head.size + 4} bytes")
    fields = head.unpack_from(buf)
    if fields[1] != VERSION:
        raise _corrupt(4, f"version {fields[1]} (this reader knows {VERSION})")
    try:
        scheme = Scheme.parse(fields[2])
    except InvalidScheme:
        raise _corrupt(5, f"unknown scheme code {fields[2]}") from None
    if fields[3] != 0:
        raise _corrupt(6, f"zero point {fields[3]} (always 0)")
    if fields[4] != 0:
        raise _corrupt(7, f"reserved byte is {fields[4]}, not 0")
    return (scheme, *fields[5:])


def _check_length_and_crc(buf: memoryview, need: int, what: str) -> None:
    if len(buf) != need:
        where = min(len(buf), need)
        state = "truncated" if len(buf) < need else f"{len(buf) - need} bytes after the end"
        raise _corrupt(where, f"{state}: the header describes a {what} of {need} bytes")
    stored = _CRC.unpack_from(buf, need - 4)[0]
    actual = zlib.crc32(buf[: need - 4])
    if stored != actual:
        raise _corrupt(need - 4, f"checksum {stored:#010x} != {actual:#010x} of the bytes before")


def _read_vector(buf: memoryview) -> QuantizedVector:
    scheme, dim, scale, low = _header(buf, _VECTOR_HEAD, "vector")
    if dim == 0:
        raise _corrupt(8, "dimension 0")
    need = _VECTOR_HEAD.size + scheme.data_size(dim) + 4
    _check_length_and_crc(buf, need, f"{scheme.value} vector of {dim} values")
    data = np.frombuffer(buf[_VECTOR_HEAD.size : need - 4], np.uint8).copy()
    return QuantizedVector(dim, scheme, scale, 0, low, data)


def _read_batch(buf: memoryview) -> QuantizedVectors:
    scheme, count, dim = _header(buf, _BATCH_HEAD, "batch")
    if dim == 0:
        raise _corrupt(12, "dimension 0")
    row = scheme.data_size(dim)
    need = _BATCH_HEAD.size + count * (8 + row) + 4
    _check_length_and_crc(buf, need, f"batch of {count} {scheme.value} vectors of {dim} values")
    at = _BATCH_HEAD.size
    scale = np.frombuffer(buf[at : at + 4 * count], "<f4").astype(np.float32)
    low = np.frombuffer(buf[at + 4 * count : at + 8 * count], "<f4").astype(np.float32)
    at += 8 * count
    data = np.frombuffer(buf[at : need - 4], np.uint8).reshape(count, row).copy()
    return QuantizedVectors(scheme, dim, scale, low, data)
