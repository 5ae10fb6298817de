"""The legacy 32-value GGML block codecs: Q4_0, Q4_1, Q5_0, Q5_1, Q8_0 and Q8_1.

Byte layouts (ggml-common.h), one block of 32 values:

    Q4_0  half d | 16 bytes nibbles                      (d = signed max / -8)
    Q4_1  half d | half m | 16 bytes nibbles             (d = (max - min) / 15, m = min)
    Q5_0  half d | u8 qh[4] | 16 bytes nibbles           (d = signed max / -16)
    Q5_1  half d | half m | u8 qh[4] | 16 bytes nibbles  (d = (max - min) / 31, m = min)
    Q8_0  half d | 32 x int8                             (d = max|x| / 127)
    Q8_1  half d | half s | 32 x int8                    (s = d * sum of codes)

Byte j of the nibbles holds element j (low) and element j+16 (high); bit i of the
little-endian word qh is bit 4 of element i's 5-bit code.

Rounding follows the reference `quantize_row_*_ref` exactly: all arithmetic in float32 with
no fused multiply-add, the inverse scale taken from the float32 scale (not the rounded
half), codes truncated after adding the offset (+8.5, +16.5 or +0.5), and Q8 codes rounded
half away from zero (C `roundf`). A block of zeros gets d = -0.0 in Q4_0/Q5_0 (0 / -8).
Where several elements hold a block's extreme, the first one counts (its sign, or which of
-0 and +0 becomes Q4_1's minimum), as in the reference's strict comparisons.

With importance weights (llama-quantize's --imatrix) Q4_0, Q4_1, Q5_0 and Q5_1 follow
ggml's weighted `quantize_<type>` instead, whose scale searches are the K-quants' (shared
from bundler.codecs.kquants.search); Q8_0 ignores the weights, as ggml does.
"""

from __future__ import annotations

import numpy as np
from numba import njit

from bundler.codecs.halfs import f32_from_bits, get_half, put_half
from bundler.codecs.intops import max_magnitude_bits, smax, smin, uindex
from bundler.codecs.kquants.common import DELTA_W, LANES, RMIN_W, nonfinite_blocks
from bundler.codecs.kquants.search import importance_lanes, scale_min_lanes, signed_lanes
from bundler.codecs.kquants.workspace import workspace

QK = 32
F0 = np.float32(0.0)
F1 = np.float32(1.0)
HALF = np.float32(0.5)
_INF = np.float32(np.inf)
# Block extremes are found on float32 bit patterns compared as integers (the loops then
# vectorise): Q4_0's and Q5_0's key holds the magnitude above _POS bits of the element's
# position; Q4_1's and Q5_1's orders are 32-bit (16 lanes a vector), the first element of
# an extreme found after, where it matters (a zero).
_MAGNITUDE = np.uint32(0x7FFFFFFF)
_INF_BITS = np.int64(0x7F800000)  # magnitudes at or above it are infinities and NaNs
_POS = np.int64(5)
_POS_MASK = np.int64(QK - 1)


@njit(cache=True, nogil=True, inline="always")
def _inverse(d):
    return F1 / d if d != F0 else F0


@njit(cache=True, nogil=True, inline="always")
def _round_away(v):
    """C roundf: nearest integer, halves away from zero."""
    t = np.int32(v)
    frac = v - np.float32(t)
    up = np.int32(1) if frac >= HALF else np.int32(0)
    down = np.int32(1) if frac <= -HALF else np.int32(0)
    return t + up - down


@njit(cache=True, nogil=True, inline="always")
def _put_codes(x, x0, out, o0, shift, inv, offset, maxq, qs_at, qh_at, qk):
    """Codes min(maxq, trunc((x - shift) * inv + offset)) of the block at x[x0] into the
    block at out[o0]: nibbles at `qs_at` (element j low, j+qk/2 high) and, when `qh_at` >=
    0, bit 4 of element i in bit i of the word at `qh_at`. (x - 0.0 is x exactly, so the
    symmetric types pass shift 0.)"""
    half = qk // 2
    qh = np.uint32(0)
    for j in range(half):
        q0 = smin(np.int32((x[uindex(x0 + j)] - shift) * inv + offset), maxq)
        q1 = smin(np.int32((x[uindex(x0 + half + j)] - shift) * inv + offset), maxq)
        pair = (q0 & np.int32(0xF)) | ((q1 & np.int32(0xF)) << np.int32(4))
        out[uindex(o0 + qs_at + j)] = np.uint8(pair)
        if qh_at >= 0:
            qh |= np.uint32((q0 >> np.int32(4)) & np.int32(1)) << np.uint32(j)
            qh |= np.uint32((q1 >> np.int32(4)) & np.int32(1)) << np.uint32(j + half)
    if qh_at >= 0:
        for k in range(4):
            out[uindex(o0 + qh_at + k)] = np.uint8((qh >> np.uint32(8 * k)) & np.uint32(0xFF))


@njit(cache=True, nogil=True, inline="always")
def _order(w):
    """float32 order of bit pattern `w` as an integer: -0 and +0 equal, NaNs beyond the
    infinities (in 32 bits: 16 lanes a vector)."""
    negative = np.int32(w) >> np.int32(31)
    return (np.int32(w & _MAGNITUDE) ^ negative) - negative


@njit(cache=True, nogil=True, inline="always")
def _first_of(x, ub, x0, qk, key):
    """The value of order `key` (`_order`) in the block at x[x0]: the reference's strict
    scans keep the first of equal values, which differ only for 0 (-0 and +0 alike)."""
    if key != 0:
        magnitude = np.uint32(abs(np.int64(key)))
        return f32_from_bits(magnitude | np.uint32(0x80000000) if key < 0 else magnitude)
    for j in range(qk):
        if _order(ub[uindex(x0 + j)]) == 0:
            return x[uindex(x0 + j)]
    return F0


@njit(cache=True, nogil=True, inline="always")
def _first_max_abs(ub, x0, qk):
    """(largest |x| bit pattern, position of the first element holding it) of the float32
    bit patterns ub[x0 : x0 + qk] (the one the reference's strict `>` keeps)."""
    key = np.int64(0)
    for j in range(qk):
        key = smax(key, (np.int64(ub[uindex(x0 + j)] & _MAGNITUDE) << _POS) | (_POS_MASK - j))
    return key >> _POS, _POS_MASK - (key & _POS_MASK)


@njit(cache=True, nogil=True)
def encode_symmetric(x, out, bits, size, qk, lo, hi):
    """Q4_0 (bits=4) or Q5_0 (bits=5) blocks lo .. hi-1 of `qk` values (at most 32; a
    run-time value, so that the compiler vectorises the block loops instead of unrolling
    them); returns the count of blocks with NaN/inf."""
    levels = np.float32(1 << (bits - 1))
    maxq = np.int32((1 << bits) - 1)
    offset = levels + HALF
    qs_at = size - qk // 2
    qh_at = qs_at - 4 if bits == 5 else -1
    bits_of = x.view(np.uint32)
    bad = 0
    for b in range(lo, hi):
        x0 = b * qk
        o0 = b * size
        top, at = _first_max_abs(bits_of, x0, qk)
        if top >= _INF_BITS:
            bad += 1
        # an all-zero block keeps the reference's starting max, +0.0
        mx = x[uindex(x0 + at)] if top else F0
        d = mx / -levels
        put_half(out, o0, d)
        _put_codes(x, x0, out, o0, F0, _inverse(d), offset, maxq, qs_at, qh_at, qk)
    return bad


@njit(cache=True, nogil=True)
def encode_affine(x, out, bits, size, qk, lo, hi):
    """Q4_1 (bits=4) or Q5_1 (bits=5): scale and minimum per block (`qk` as above)."""
    maxq = np.int32((1 << bits) - 1)
    qs_at = size - qk // 2
    qh_at = qs_at - 4 if bits == 5 else -1
    bits_of = x.view(np.uint32)
    bad = 0
    for b in range(lo, hi):
        x0 = b * qk
        o0 = b * size
        lo = np.int32(0x7FFFFFFF)
        hi = np.int32(-0x7FFFFFFF)
        for j in range(qk):
            o = _order(bits_of[uindex(x0 + j)])
            lo = smin(lo, o)
            hi = smax(hi, o)
        if hi >= _INF_BITS or lo <= -_INF_BITS:
            bad += 1
        mn = _first_of(x, bits_of, x0, qk, lo)
        mx = _first_of(x, bits_of, x0, qk, hi)
        d = (mx - mn) / np.float32(maxq)
        put_half(out, o0, d)
        put_half(out, o0 + 2, mn)
        _put_codes(x, x0, out, o0, mn, _inverse(d), HALF, maxq, qs_at, qh_at, qk)
    return bad


@njit(cache=True, nogil=True)
def encode_q8(x, out, with_sum, size, qk, lo, hi):
    """Q8_0, or Q8_1 when `with_sum` (adds half s = d * sum of codes after d)."""
    qs_at = size - qk
    bits_of = x.view(np.uint32)
    bad = 0
    for b in range(lo, hi):
        x0 = b * qk
        c0 = b * size + qs_at
        top = max_magnitude_bits(bits_of, x0, qk)
        if top >= _INF_BITS:
            bad += 1
        d = f32_from_bits(top) / np.float32(127)
        inv = _inverse(d)
        put_half(out, b * size, d)
        total = np.int32(0)
        if inv == _INF:
            # d is subnormal and 1/d overflows: ggml converts each infinite or NaN product
            # with x86's cvtss2si, which gives INT_MIN, so every stored code (and the sum) is 0
            for j in range(qk):
                out[uindex(c0 + j)] = 0
        else:
            for j in range(qk):
                q = _round_away(x[uindex(x0 + j)] * inv)
                total += q
                out[uindex(c0 + j)] = np.uint8(q & np.int32(0xFF))
        if with_sum:
            put_half(out, b * size + 2, np.float32(total) * d)
    return bad


@njit(cache=True, nogil=True)
def encode_weighted(x, out, qw, n_per_row, bits, size, affine, lo, hi):
    """Blocks lo .. hi-1 of Q4_0, Q5_0 or, `affine`, Q4_1, Q5_1 with importance weights
    `qw` (one per column of the rows of n_per_row values), as ggml's `quantize_<type>` given
    `quant_weights`: the weight of x is qw * sqrt(sigma2 + x^2), sigma2 the mean of x^2 over
    the row; the symmetric types search the signed scale (make_qx_quants, codes -n..n-1),
    the affine ones scale and min (make_qkx3_quants). No requantization: the search's
    codes are stored, with the float32 scale rounded to half. Returns the count of blocks
    with NaN/inf. Runs LANES blocks side by side with the K-quant searches."""
    ws = workspace(QK)
    X, W, XM, L, Laux, S, scales, mins = ws[:8]
    col, sigma2 = ws[11], ws[12]
    maxq = (1 << bits) - 1
    qs_at = size - QK // 2
    per_row = n_per_row // QK
    row = -1
    row_sigma2 = F0
    for first in range(lo, hi, LANES):
        m = min(LANES, hi - first)
        for k in range(LANES):
            if k < m:
                b = first + k
                if b // per_row != row:
                    row = b // per_row
                    total = F0
                    for e in range(row * n_per_row, (row + 1) * n_per_row):
                        total += x[e] * x[e]
                    row_sigma2 = total / np.float32(n_per_row)
                col[k] = (b % per_row) * QK
                sigma2[k] = row_sigma2
                for i in range(QK):
                    X[i, k] = x[b * QK + i]
            else:
                col[k] = 0
                sigma2[k] = F0
                for i in range(QK):
                    X[i, k] = F0
        importance_lanes(X, qw, col, sigma2, False, W)
        if affine:
            scale_min_lanes(X, W, maxq, RMIN_W, DELTA_W, 36, False, L, Laux, XM, S, scales, mins)
        else:
            signed_lanes(X, 1 << (bits - 1), L, Laux, W, XM, S, scales, True)
        for k in range(m):
            b = first + k
            ob = out[b * size : (b + 1) * size]
            put_half(ob, 0, scales[k])
            if affine:
                put_half(ob, 2, -mins[k])
            qh = np.uint32(0)
            for j in range(QK // 2):
                q0 = L[j, k]
                q1 = L[j + QK // 2, k]
                ob[qs_at + j] = np.uint8((q0 & 0xF) | ((q1 & 0xF) << 4))
                qh |= np.uint32((q0 >> 4) & 1) << np.uint32(j)
                qh |= np.uint32((q1 >> 4) & 1) << np.uint32(j + QK // 2)
            if bits == 5:
                for i in range(4):
                    ob[qs_at - 4 + i] = np.uint8((qh >> np.uint32(8 * i)) & np.uint32(0xFF))
    return nonfinite_blocks(x, lo, hi, QK)


@njit(cache=True, nogil=True)
def decode_nibbles(raw, out, bits, affine, size, table, lo, hi):
    """Q4_0, Q4_1, Q5_0, Q5_1 blocks lo .. hi-1 to float32."""
    qs_at = size - QK // 2
    offset = np.float32(0 if affine else 1 << (bits - 1))
    for b in range(uindex(lo), uindex(hi)):
        r0 = b * size
        d = get_half(raw, r0, table)
        m = get_half(raw, r0 + 2, table) if affine else F0
        qh = np.uint32(0)
        if bits == 5:
            for k in range(4):
                qh |= np.uint32(raw[uindex(r0 + qs_at - 4 + k)]) << np.uint32(8 * k)
        # the output a view: indexed as two streams from `out`, Q4_0's loop ran at half speed
        y = out[b * QK : (b + 1) * QK]
        for j in range(QK // 2):
            byte = np.uint32(raw[uindex(r0 + qs_at + j)])
            h0 = ((qh >> np.uint32(j)) & np.uint32(1)) << np.uint32(4)
            h1 = ((qh >> np.uint32(j + QK // 2)) & np.uint32(1)) << np.uint32(4)
            q0 = np.float32((byte & np.uint32(0xF)) | h0) - offset
            q1 = np.float32((byte >> np.uint32(4)) | h1) - offset
            if affine:
                y[j] = q0 * d + m
                y[j + QK // 2] = q1 * d + m
            else:
                y[j] = q0 * d
                y[j + QK // 2] = q1 * d


@njit(cache=True, nogil=True)
def decode_q8(raw, out, with_sum, size, table, qk, lo, hi):
    """Q8_0 or Q8_1 blocks lo .. hi-1 to float32 (the Q8_1 sum is not needed to decode)."""
    qs_at = size - qk
    codes = raw.view(np.int8)
    for b in range(uindex(lo), uindex(hi)):
        d = get_half(raw, b * size, table)
        c0 = b * size + qs_at
        y0 = b * qk
        for j in range(qk):
            out[uindex(y0 + j)] = np.float32(codes[uindex(c0 + j)]) * d
