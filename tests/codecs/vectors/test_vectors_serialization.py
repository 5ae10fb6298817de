"""The wire format: exact round trips, a pinned layout, and typed errors for every kind of
damage (truncation, extra bytes, flipped bits, unknown codes), never a traceback."""

from __future__ import annotations

import struct
import zlib

import numpy as np
import pytest

from bundler import vectors
from bundler.errors import DataCorrupted, FormatError

X = np.random.default_rng(11).standard_normal((6, 13)).astype(np.float32)


@pytest.mark.parametrize("scheme", list(vectors.Scheme))
def test_one_vector_and_a_batch_round_trip_bit_for_bit(scheme):
    one = vectors.quantize(X[0], scheme)
    assert vectors.from_bytes(vectors.to_bytes(one)) == one
    batch = vectors.quantize(X, scheme)
    back = vectors.from_bytes(vectors.to_bytes(batch))
    assert back.scheme == scheme and back.dim == 13
    for a, b in ((back.scale, batch.scale), (back.min, batch.min), (back.data, batch.data)):
        assert a.tobytes() == b.tobytes()


def test_the_vector_layout_is_header_data_crc():
    q = vectors.quantize(np.array([0.0, 1.0, 0.5], np.float32), "qint8")
    raw = vectors.to_bytes(q)
    head = struct.pack("<4sBBbBIff", b"BVQ1", 1, 0, 0, 0, 3, q.scale, q.min_val)
    assert raw[:20] == head
    assert raw[20:23] == q.data.tobytes()
    assert raw[23:] == struct.pack("<I", zlib.crc32(raw[:23]))
    assert len(raw) == 27


def test_the_batch_layout_is_header_scales_mins_data_crc():
    q = vectors.quantize(X[:2, :4], "qint4")
    raw = vectors.to_bytes(q)
    assert raw[:16] == struct.pack("<4sBBbBII", b"BVB1", 1, 1, 0, 0, 2, 4)
    assert raw[16:24] == q.scale.tobytes() and raw[24:32] == q.min.tobytes()
    assert raw[32:36] == q.data.tobytes() and len(raw) == 40


def _damaged(raw: bytes) -> dict[str, bytes]:
    flipped = bytearray(raw)
    flipped[len(raw) // 2 + 10] ^= 0x10
    return {
        "empty": b"",
        "magic_only": raw[:4],
        "header_cut": raw[:10],
        "data_cut": raw[:-7],
        "crc_cut": raw[:-1],
        "extra_byte": raw + b"\0",
        "flipped_data_bit": bytes(flipped),
        "wrong_magic": b"XXXX" + raw[4:],
        "version_2": raw[:4] + b"\x02" + raw[5:],
        "scheme_9": raw[:5] + b"\x09" + raw[6:],
        "zero_point_1": raw[:6] + b"\x01" + raw[7:],
    }


@pytest.mark.parametrize("kind", ["vector", "batch"])
@pytest.mark.parametrize("damage", sorted(_damaged(b"x" * 64)))
def test_damaged_bytes_raise_data_corrupted_with_an_offset(kind, damage):
    q = vectors.quantize(X[0] if kind == "vector" else X, "qint8")
    bad = _damaged(vectors.to_bytes(q))[damage]
    with pytest.raises(DataCorrupted) as info:
        vectors.from_bytes(bad)
    assert isinstance(info.value, FormatError) and info.value.exit_code == 4
    assert info.value.offset is not None


def test_a_count_larger_than_the_bytes_is_truncation_not_a_huge_allocation():
    raw = bytearray(vectors.to_bytes(vectors.quantize(X, "binary")))
    raw[8:12] = struct.pack("<I", 2**32 - 1)
    with pytest.raises(DataCorrupted, match="truncated"):
        vectors.from_bytes(bytes(raw))
