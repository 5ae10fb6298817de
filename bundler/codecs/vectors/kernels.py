"""Compiled per-row loops of the vector schemes, in float32 exactly as formats/vectors.md states.

Every constant is a float32 so that no operation widens to float64; numba without
fastmath neither reorders sums nor fuses a multiply and an add, so each operation rounds
once, in the order written. Rows are independent; the loops run on one thread.
"""

from __future__ import annotations

import numpy as np
from numba import njit

from bundler.codecs.halfs import f32_bits, f32_from_bits, f32_to_f16_bits

_F0 = np.float32(0.0)
_F1 = np.float32(1.0)
_HALF = np.float32(0.5)
_TINY = np.float32(1e-10)
_I8_LEVELS = np.float32(255.0)
_I4_LEVELS = np.float32(15.0)
_TWO_112 = np.float32(2.0**112)
#: The eight ±1 values of every byte, least significant bit first.
_SIGNS = (((np.arange(256)[:, None] >> np.arange(8)) & 1) * 2 - 1).astype(np.float32)


@njit(cache=True, nogil=True, inline="always")
def _scale_and_inverse(lo, hi, levels):
    """lnmp-quant's step: (hi - lo) / levels, 1 when the range is below 1e-10."""
    span = hi - lo
    scale = _F1 if abs(span) < _TINY else span / levels
    inv = _F1 / scale if abs(scale) > _TINY else _F1
    return scale, inv


@njit(cache=True, nogil=True, inline="always")
def _lesser(a, b):
    return a if a < b else b


@njit(cache=True, nogil=True, inline="always")
def _greater(a, b):
    return a if a > b else b


@njit(cache=True, nogil=True)
def row_min_max(x, low, high):
    """Each row's min and max, over eight interleaved strides (the order does not change a
    min or max of finite values, only which of -0.0 and 0.0 is kept: the caller fixes that)."""
    dim = x.shape[1]
    full = dim - dim % 8
    for i in range(x.shape[0]):
        row = x[i]
        a0 = a1 = a2 = a3 = a4 = a5 = a6 = a7 = row[0]
        b0 = b1 = b2 = b3 = b4 = b5 = b6 = b7 = row[0]
        for j in range(0, full, 8):
            a0 = _lesser(a0, row[j])
            a1 = _lesser(a1, row[j + 1])
            a2 = _lesser(a2, row[j + 2])
            a3 = _lesser(a3, row[j + 3])
            a4 = _lesser(a4, row[j + 4])
            a5 = _lesser(a5, row[j + 5])
            a6 = _lesser(a6, row[j + 6])
            a7 = _lesser(a7, row[j + 7])
            b0 = _greater(b0, row[j])
            b1 = _greater(b1, row[j + 1])
            b2 = _greater(b2, row[j + 2])
            b3 = _greater(b3, row[j + 3])
            b4 = _greater(b4, row[j + 4])
            b5 = _greater(b5, row[j + 5])
            b6 = _greater(b6, row[j + 6])
            b7 = _greater(b7, row[j + 7])
        lo = _lesser(
            _lesser(_lesser(a0, a1), _lesser(a2, a3)), _lesser(_lesser(a4, a5), _lesser(a6, a7))
        )
        hi = _greater(
            _greater(_greater(b0, b1), _greater(b2, b3)),
            _greater(_greater(b4, b5), _greater(b6, b7)),
        )
        for j in range(full, dim):
            lo = _lesser(lo, row[j])
            hi = _greater(hi, row[j])
        low[i] = lo
        high[i] = hi


@njit(cache=True, nogil=True, inline="always")
def _round_half_away(x):
    """Rust's `f32::round`: to nearest, ties away from zero (x is never negative here)."""
    t = np.float32(np.trunc(x))
    if x - t >= _HALF:
        t += _F1
    return t


@njit(cache=True, nogil=True)
def qint8_encode(x, low, high, codes, scale):
    """codes[i, j] = clamp(trunc((x[i, j] - min_i) * (1 / scale_i)) - 128, -128, 127).

    `low` and `high` are each row's min and max; x is finite and max - min does not
    overflow, so the product is finite and truncating it is Rust's `as i32`.
    """
    for i in range(x.shape[0]):
        row = x[i]
        lo = low[i]
        s, inv = _scale_and_inverse(lo, high[i], _I8_LEVELS)
        scale[i] = s
        out = codes[i]
        for j in range(row.shape[0]):
            q = np.int32((row[j] - lo) * inv) - 128
            out[j] = min(max(q, -128), 127)


@njit(cache=True, nogil=True)
def qint8_decode(codes, scale, low, out):
    """out[i, j] = float32(codes[i, j] + 128) * scale_i + min_i (two roundings)."""
    for i in range(codes.shape[0]):
        s = scale[i]
        lo = low[i]
        c = codes[i]
        o = out[i]
        for j in range(c.shape[0]):
            o[j] = np.float32(np.int32(c[j]) + 128) * s + lo


@njit(cache=True, nogil=True)
def qint4_encode(x, low, high, packed, scale):
    """Nibbles round((x - min) * (1 / scale)) clamped to 0..15; the first value of a pair in
    the high nibble, a missing last value as 0. `low`/`high` as for qint8_encode."""
    dim = x.shape[1]
    pairs = dim // 2
    nibbles = np.empty(dim, np.uint8)
    for i in range(x.shape[0]):
        row = x[i]
        lo = low[i]
        s, inv = _scale_and_inverse(lo, high[i], _I4_LEVELS)
        scale[i] = s
        out = packed[i]
        for j in range(dim):
            nibbles[j] = _nibble((row[j] - lo) * inv)
        for b in range(pairs):
            out[b] = (nibbles[2 * b] << 4) | nibbles[2 * b + 1]
        if dim % 2:
            out[pairs] = nibbles[dim - 1] << 4


@njit(cache=True, nogil=True, inline="always")
def _nibble(x):
    return np.uint8(min(max(_round_half_away(x), _F0), _I4_LEVELS))


@njit(cache=True, nogil=True)
def qint4_decode(packed, scale, low, out):
    """out = nibble * scale + min (two roundings)."""
    dim = out.shape[1]
    pairs = dim // 2
    levels = np.empty(16, np.float32)
    for i in range(packed.shape[0]):
        s = scale[i]
        lo = low[i]
        for k in range(16):
            levels[k] = np.float32(k) * s + lo
        p = packed[i]
        o = out[i]
        for b in range(pairs):
            o[2 * b] = levels[p[b] >> 4]
            o[2 * b + 1] = levels[p[b] & 15]
        if dim % 2:
            o[dim - 1] = levels[p[pairs] >> 4]


@njit(cache=True, nogil=True)
def row_sums(x, total):
    """Each row's float32 sum, strictly left to right (Rust's `iter().sum::<f32>()`); eight
    rows are summed side by side so that their additions overlap."""
    rows, dim = x.shape
    full = rows - rows % 8
    for s in range(0, full, 8):
        t0 = t1 = t2 = t3 = t4 = t5 = t6 = t7 = _F0
        for j in range(dim):
            t0 += x[s, j]
            t1 += x[s + 1, j]
            t2 += x[s + 2, j]
            t3 += x[s + 3, j]
            t4 += x[s + 4, j]
            t5 += x[s + 5, j]
            t6 += x[s + 6, j]
            t7 += x[s + 7, j]
        total[s] = t0
        total[s + 1] = t1
        total[s + 2] = t2
        total[s + 3] = t3
        total[s + 4] = t4
        total[s + 5] = t5
        total[s + 6] = t6
        total[s + 7] = t7
    for i in range(full, rows):
        t = _F0
        for j in range(dim):
            t += x[i, j]
        total[i] = t


@njit(cache=True, nogil=True)
def binary_encode(x, packed, mean):
    """Bit j % 8 (least significant first) of byte j // 8 is set when x[j] >= the row's
    mean, the mean being the left-to-right float32 sum divided by float32(dim)."""
    rows, dim = x.shape
    row_sums(x, mean)
    n = np.float32(dim)
    bits = np.zeros(packed.shape[1] * 8, np.uint8)
    for i in range(rows):
        m = mean[i] / n
        mean[i] = m
        row = x[i]
        for j in range(dim):
            bits[j] = np.uint8(row[j] >= m)
        out = packed[i]
        for b in range(out.shape[0]):
            k = 8 * b
            out[b] = (
                bits[k]
                | (bits[k + 1] << 1)
                | (bits[k + 2] << 2)
                | (bits[k + 3] << 3)
                | (bits[k + 4] << 4)
                | (bits[k + 5] << 5)
                | (bits[k + 6] << 6)
                | (bits[k + 7] << 7)
            )


@njit(cache=True, nogil=True)
def binary_decode(packed, out):
    """+1 for a set bit, -1 for a clear one."""
    dim = out.shape[1]
    full = dim // 8
    for i in range(packed.shape[0]):
        p = packed[i]
        o = out[i]
        for b in range(full):
            signs = _SIGNS[p[b]]
            for k in range(8):
                o[8 * b + k] = signs[k]
        for j in range(8 * full, dim):
            o[j] = np.float32(((p[full] >> (j - 8 * full)) & 1) * 2 - 1)


@njit(cache=True, nogil=True)
def f16_encode(x, out):
    """IEEE binary16 bits, round to nearest even, overflow to infinity."""
    for i in range(x.shape[0]):
        row = x[i]
        o = out[i]
        for j in range(row.shape[0]):
            o[j] = f32_to_f16_bits(row[j])


@njit(cache=True, nogil=True)
def f16_decode(bits, out):
    """float32 of binary16 bits, exact: the magnitude bits moved into float32's field and
    scaled by 2^112 (subnormals included); all-ones exponents become inf/NaN."""
    for i in range(bits.shape[0]):
        h = bits[i]
        o = out[i]
        for j in range(h.shape[0]):
            u = np.uint32(h[j])
            mag = (u & np.uint32(0x7FFF)) << np.uint32(13)
            f = f32_from_bits(mag) * _TWO_112
            if (u & np.uint32(0x7C00)) == np.uint32(0x7C00):
                f = f32_from_bits(mag | np.uint32(0x7F800000))
            o[j] = f32_from_bits(f32_bits(f) | ((u & np.uint32(0x8000)) << np.uint32(16)))
