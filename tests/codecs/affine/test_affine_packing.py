"""Nibble and int32 packing against a bit-by-bit restatement of compressed-tensors' rules."""

from __future__ import annotations

import numpy as np
import pytest

from bundler.codecs.affine import packing
from bundler.errors import ShapeError

RNG = np.random.default_rng(3)


def _dense_words(values, bits):
    """compressed-tensors 0.20: pad rows to 32 values; value i of a group takes bits
    i*B .. i*B+B-1 of the group's B words, little-endian; keep ceil(cols*B/32) words."""
    rows, cols = values.shape
    padded = -(-cols // 32) * 32
    out = np.zeros((rows, padded * bits // 32), np.uint64)
    for r in range(rows):
        for c in range(cols):
            v = int(values[r, c])
            for bit in range(bits):
                if v >> bit & 1:
                    pos = c * bits + bit
                    out[r, pos // 32] |= np.uint64(1 << (pos % 32))
    return out[:, : -(-cols * bits // 32)].astype(np.uint32).view(np.int32)


@pytest.mark.parametrize("bits", [2, 3, 4, 5, 6, 7, 8])
@pytest.mark.parametrize("cols", [32, 40, 7, 96])
def test_int32_packing_equals_bitwise_restatement_and_unpacks(bits, cols):
    values = RNG.integers(0, 2**bits, size=(3, cols))
    words = packing.pack_int32(values, bits)
    np.testing.assert_array_equal(words, _dense_words(values, bits))
    np.testing.assert_array_equal(packing.unpack_int32(words, bits, cols), values)


@pytest.mark.parametrize("bits", [3, 5, 6, 7])
def test_older_non_straddling_layout_is_read_too(bits):
    per = 32 // bits
    cols = 128
    values = RNG.integers(0, 2**bits, size=(2, cols))
    n = -(-cols // per)
    assert n != packing.packed_words(cols, bits)  # the word counts tell the layouts apart
    words = np.zeros((2, n), np.uint64)
    for c in range(cols):
        words[:, c // per] |= values[:, c].astype(np.uint64) << np.uint64((c % per) * bits)
    old = words.astype(np.uint32).view(np.int32)
    np.testing.assert_array_equal(packing.unpack_int32(old, bits, cols), values)


def test_four_bit_words_are_the_nibble_bytes_first_value_low():
    values = np.arange(16).reshape(1, 16) % 16
    words = packing.pack_int32(values, 4)
    assert words.tobytes() == packing.pack_nibbles(values).tobytes()
    assert packing.pack_nibbles(np.array([[1, 2, 3]])).tolist() == [[0x21, 0x03]]
    assert words.view("<u4")[0, 0] == 0x76543210


def test_signed_codes_are_offset_before_packing():
    assert packing.offset(4, True) == 8 and packing.offset(4, False) == 0
    assert packing.offset(8, True) == 128


def test_a_word_count_that_fits_no_layout_is_a_shape_error():
    with pytest.raises(ShapeError):
        packing.unpack_int32(np.zeros((2, 3), np.int32), 4, 64)
