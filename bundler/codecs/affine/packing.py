"""Packing of sub-byte codes: two nibbles per byte, and compressed-tensors' int32 words.

Both store unsigned B-bit values, signed codes offset by 2^(B-1) first (compressed-tensors'
rule; asymmetric codes are already unsigned).

- Nibbles (4 bits): element 2i is the low nibble of byte i, element 2i+1 the high nibble;
  an odd row ends with a zero high nibble.
- int32 words (compressed-tensors 0.20, dense): each row is padded with zeros to a multiple
  of 32 values; element i of a 32-value group occupies bits i*B .. i*B+B-1 of that group's
  B little-endian words (an element may straddle two words), and the row keeps
  ceil(cols * B / 32) words. For B = 4 and 8 the words' bytes are the nibble / byte
  sequence itself. Earlier releases put 32 // B whole values in each word (no straddling,
  ceil(cols / (32 // B)) words); `unpack_int32` reads both, told apart by the word count
  where they differ (some widths for B = 3, 5, 6, 7; equal counts read as dense).
"""

from __future__ import annotations

import numpy as np

from bundler.errors import ShapeError


def code_range(bits: int, signed: bool) -> tuple[int, int]:
    """The least and greatest `bits`-bit code: -2^(B-1) .. 2^(B-1)-1 signed, 0 .. 2^B-1
    unsigned."""
    if signed:
        return -(1 << (bits - 1)), (1 << (bits - 1)) - 1
    return 0, (1 << bits) - 1


class IntegerCodes:
    """`qmin` and `qmax` of a scheme's `bits`-bit codes, signed when its `signed` is true."""

    bits: int
    signed: bool

    @property
    def qmin(self) -> int:
        return code_range(self.bits, self.signed)[0]

    @property
    def qmax(self) -> int:
        return code_range(self.bits, self.signed)[1]


def offset(bits: int, symmetric: bool) -> int:
    """What is added to a code to make it the unsigned value that is packed."""
    return -code_range(bits, symmetric)[0]


def pack_nibbles(values: np.ndarray) -> np.ndarray:
    """Unsigned 4-bit values (..., n) -> bytes (..., ceil(n / 2))."""
    v = np.asarray(values).astype(np.uint8)
    if v.shape[-1] % 2:
        v = np.concatenate([v, np.zeros((*v.shape[:-1], 1), np.uint8)], axis=-1)
    return (v[..., 0::2] & 0xF) | ((v[..., 1::2] & 0xF) << 4)


def unpack_nibbles(packed: np.ndarray, n: int) -> np.ndarray:
    """Bytes (..., m) -> unsigned 4-bit values (..., n)."""
    p = np.asarray(packed, dtype=np.uint8)
    out = np.empty((*p.shape[:-1], 2 * p.shape[-1]), np.uint8)
    out[..., 0::2] = p & 0xF
    out[..., 1::2] = p >> 4
    return out[..., :n]


def packed_words(cols: int, bits: int) -> int:
    """int32 words of one packed row of `cols` values."""
    return -(-cols * bits // 32)


def pack_int32(values: np.ndarray, bits: int) -> np.ndarray:
    """Unsigned B-bit values (rows, cols) -> int32 words (rows, ceil(cols * B / 32))."""
    rows, cols = np.shape(values)
    if bits in (4, 8):  # the words' bytes are the nibble or byte sequence
        per = 32 // bits
        v = np.zeros((rows, -(-cols // per) * per), np.uint8)
        v[:, :cols] = values
        return np.ascontiguousarray(pack_nibbles(v) if bits == 4 else v).view("<i4")
    v = np.asarray(values).astype(np.uint64)
    padded = -(-cols // 32) * 32
    if padded != cols:
        v = np.concatenate([v, np.zeros((rows, padded - cols), np.uint64)], axis=1)
    groups = v.reshape(rows, padded // 32, 32) & np.uint64((1 << bits) - 1)
    # each 32-value group is one integer of 32*B bits, split into B little-endian words
    words = np.zeros((rows, padded // 32, bits), np.uint64)
    for i in range(32):
        start = i * bits
        w, b = divmod(start, 32)
        words[:, :, w] |= (groups[:, :, i] << np.uint64(b)) & np.uint64(0xFFFFFFFF)
        if b + bits > 32:
            words[:, :, w + 1] |= groups[:, :, i] >> np.uint64(32 - b)
    flat = words.reshape(rows, -1)[:, : packed_words(cols, bits)]
    return flat.astype(np.uint32).view(np.int32)


def unpack_int32(words: np.ndarray, bits: int, cols: int) -> np.ndarray:
    """int32 words (rows, w) -> unsigned B-bit values (rows, cols), dense or older layout."""
    w = np.asarray(words)
    if w.dtype != np.int32 or w.ndim != 2:
        raise ShapeError(f"packed codes must be 2-D int32, got {w.dtype} {w.shape}")
    rows, have = w.shape
    if bits in (4, 8) and have == packed_words(cols, bits):
        b = np.ascontiguousarray(w.astype("<i4")).view(np.uint8)
        return (unpack_nibbles(b, cols) if bits == 4 else b[:, :cols]).astype(np.uint16)
    u = w.view(np.uint32).astype(np.uint64)
    mask = np.uint64((1 << bits) - 1)
    if have == packed_words(cols, bits):
        padded = -(-cols // 32) * 32
        full = np.zeros((rows, padded // 32 * bits), np.uint64)
        full[:, :have] = u
        groups = full.reshape(rows, padded // 32, bits)
        out = np.empty((rows, padded // 32, 32), np.uint64)
        for i in range(32):
            start = i * bits
            wi, b = divmod(start, 32)
            val = groups[:, :, wi] >> np.uint64(b)
            if b + bits > 32:
                val |= groups[:, :, wi + 1] << np.uint64(32 - b)
            out[:, :, i] = val & mask
        return out.reshape(rows, -1)[:, :cols].astype(np.uint16)
    per = 32 // bits
    if have == -(-cols // per):
        out = np.empty((rows, have, per), np.uint64)
        for i in range(per):
            out[:, :, i] = (u >> np.uint64(i * bits)) & mask
        return out.reshape(rows, -1)[:, :cols].astype(np.uint16)
    raise ShapeError(
        f"{have} int32 words per row do not hold {cols} {bits}-bit values "
        f"(expected {packed_words(cols, bits)})"
    )
