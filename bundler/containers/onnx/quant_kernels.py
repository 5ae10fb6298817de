"""The compiled loop of quant.py for float32 weights: per block of consecutive values of a
row, the range, the scale and zero point and the codes, in one pass over memory. Same
arithmetic as quant.parameters / quant.codes (float32 scales, codes from the stored scale
in float32, round half to even, saturate)."""

from __future__ import annotations

import numpy as np
from numba import njit

TINY = np.float32(np.finfo(np.float32).tiny)


@njit(cache=True, nogil=True)
def _parameters(lo, hi, qmin, qmax, signed):  # pragma: no cover - compiled
    """The float32 scale and the zero point of a block whose values span [lo, hi]."""
    lo0 = min(np.float64(lo), 0.0)
    hi0 = max(np.float64(hi), 0.0)
    extreme = lo0 if -lo0 >= hi0 else hi0
    scale = extreme / qmin if signed else (hi0 - lo0) / (qmax - qmin)
    if lo == hi:
        scale = abs(np.float64(lo))
    if scale == 0.0:
        scale = 1.0
    s32 = np.float32(scale)
    if s32 == 0:
        s32 = TINY
    zero = 0.0
    if not signed:
        zero = min(max(np.rint(qmin - lo0 / np.float64(s32)), qmin), qmax)
    return s32, zero


@njit(cache=True, nogil=True)
def blocks(x, size, qmin, qmax, signed, codes, scales, zeros):  # pragma: no cover - compiled
    """x float32 [rows, k]; codes [rows, k] (int16); scales float32 / zeros int16 [rows,
    ceil(k / size)]."""
    rows, k = x.shape
    nb = scales.shape[1]
    for r in range(rows):
        for j in range(nb):
            start = j * size
            stop = min(start + size, k)
            lo = x[r, start]
            hi = lo
            for i in range(start + 1, stop):
                v = x[r, i]
                lo = min(lo, v)
                hi = max(hi, v)
            s32, zero = _parameters(lo, hi, qmin, qmax, signed)
            scales[r, j] = s32
            zeros[r, j] = np.int16(zero)
            z32 = np.float32(zero)
            for i in range(start, stop):
                q = np.rint(x[r, i] / s32) + z32
                codes[r, i] = np.int16(min(max(q, np.float32(qmin)), np.float32(qmax)))


@njit(cache=True, nogil=True)
def nbits(w, size, signed, packed, scales, zeros):  # pragma: no cover - compiled
    """MatMulNBits in one pass: w float32 [k, n] (the MatMul's B); per column n and block j
    of `size` rows, the scale and zero point (int16, unsigned range) and the 4-bit codes
    (signed ones offset by 8) packed two a byte, low nibble first, into packed uint8
    [n, blocks, size // 2]; padding codes are the zero point."""
    k, n = w.shape
    nb = scales.shape[1]
    qmin, qmax = (-8, 7) if signed else (0, 15)
    column = np.empty(size, np.float32)
    codes = np.empty(size, np.uint8)
    for c in range(n):
        for j in range(nb):
            start = j * size
            stop = min(start + size, k)
            m = stop - start
            for i in range(m):
                column[i] = w[start + i, c]
            lo = column[0]
            hi = lo
            for i in range(1, m):
                lo = min(lo, column[i])
                hi = max(hi, column[i])
            s32, zero = _parameters(lo, hi, qmin, qmax, signed)
            scales[c, j] = s32
            zeros[c, j] = np.int16(zero)
            z32 = np.float32(zero)
            offset = 8 if signed else 0
            for i in range(m):
                q = np.rint(column[i] / s32) + z32
                q = min(max(q, np.float32(qmin)), np.float32(qmax))
                codes[i] = np.uint8(np.int16(q) + offset)
            for i in range(m, size):
                codes[i] = np.uint8(np.int16(zero) + offset)
            for i in range(size // 2):
                packed[c, j, i] = codes[2 * i] | (codes[2 * i + 1] << 4)
