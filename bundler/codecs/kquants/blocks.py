"""What differs between the K-quant encoders: each type's sub-block search (over the lanes
of a worker's workspace) and its `finish`, which quantizes one super-block's sub-block
scales into its header, requantizes its codes against them and packs the codes.

The byte layouts are ggml's `block_q2_K` .. `block_q6_K` (`ggml-common.h`); the offsets
below are theirs.
"""

from __future__ import annotations

import numpy as np
from numba import njit

from bundler.codecs.halfs import get_half, put_half
from bundler.codecs.kquants.common import (
    DELTA_W,
    EPS,
    F0,
    F1,
    F15,
    F32,
    F63,
    F128,
    JIT,
    LANES,
    RMIN_W,
    TENTH,
    nearest,
    q3_scale,
    scale_min_k4,
)
from bundler.codecs.kquants.search import q3_lanes, qp_lanes, scale_min_lanes, signed_lanes
from bundler.codecs.kquants.workspace import (
    lane_views,
    largest,
    largest_magnitude,
    pack_2bit,
    requantize,
    super_block_lanes,
)

# ---------------------------------------------------------------- Q2_K


@njit(**JIT)
def q2_k_search(ws):
    X, W, XM, L, Laux, S, scales, mins, _ = ws[:9]
    for i in range(16):
        for k in range(LANES):
            W[i, k] = abs(X[i, k])
    scale_min_lanes(X, W, 3, np.float32(-0.5), TENTH, 15, True, L, Laux, XM, S, scales, mins)


@njit(**JIT)
def scale_min_weighted_search(ws, top, count, nmax, nsub):
    """The weighted search of Q2_K, Q4_K and Q5_K (ggml's `quantize_row_q*_K_impl`): each
    sub-block's codes, scale and min by make_qkx3_quants over the importance weights W,
    then each super-block's sub-block scales and mins quantized to 0..15 (Q2_K) or 0..63
    by make_qp_quants, weighted by the sums of W (into top's L/scales and Laux/mins)."""
    X, W, XM, L, Laux, S, scales, mins, _ = ws[:9]
    scale_min_lanes(X, W, nmax, RMIN_W, DELTA_W, 36, False, L, Laux, XM, S, scales, mins)
    super_block_lanes(ws, top, nsub, count, True)
    cap = 15 if nsub == 16 else 63
    qp_lanes(top[0], top[1], cap, top[3], top[5], top[6])
    qp_lanes(top[2], top[1], cap, top[4], top[5], top[7])


@njit(**JIT)
def q2_k_finish(x, y, table, ws, off):
    L, scales, mins = lane_views(ws, off, 16)
    max_scale = largest(scales)
    max_min = largest(mins)
    sc = y[0:16]
    if max_scale > F0:
        iscale = F15 / max_scale
        for j in range(16):
            sc[j] = np.uint8(nearest(iscale * scales[j]) & 0xFF)
        put_half(y, 80, max_scale / F15)
    else:
        for j in range(16):
            sc[j] = 0
        put_half(y, 80, F0)
    if max_min > F0:
        imin = F15 / max_min
        for j in range(16):
            sc[j] |= np.uint8((nearest(imin * mins[j]) << 4) & 0xFF)
        put_half(y, 82, max_min / F15)
    else:
        put_half(y, 82, F0)
    _q2_k_codes(x, y, table, ws, L)


@njit(**JIT)
def q2_k_weighted_finish(x, y, table, ws, top, off, g):
    L = lane_views(ws, off, 16)[0]
    put_half(y, 80, top[6][g])
    put_half(y, 82, top[7][g])
    for j in range(16):
        y[j] = np.uint8((top[3][j, g] | (top[4][j, g] << 4)) & 0xFF)
    _q2_k_codes(x, y, table, ws, L)


@njit(**JIT)
def _q2_k_codes(x, y, table, ws, L):
    """Q2_K codes requantized against the header's scales and mins, packed."""
    codes = ws[8]
    sc = y[0:16]
    dh = get_half(y, 80, table)
    mh = get_half(y, 82, table)
    sub_d, sub_m = ws[5][13], ws[5][14]
    for j in range(16):
        sub_d[j] = dh * np.float32(sc[j] & 0xF)
        sub_m[j] = mh * np.float32(sc[j] >> 4)
    requantize(x, 16, sub_d, sub_m, True, 0, 3, 0, L, ws)
    pack_2bit(codes, y[16:80])


# ---------------------------------------------------------------- Q3_K


@njit(**JIT)
def q3_k_search(ws):
    X, W, WX, L, _, S, scales, _, _ = ws[:9]
    q3_lanes(X, L, W, WX, S, scales)


@njit(**JIT)
def q3_k_weighted_search(ws, top, count):
    """The weighted search of Q3_K (ggml's `quantize_row_q3_K_impl`): each sub-block by
    make_qx_quants over the importance weights (codes -4..3), then each super-block's 16
    scales by make_qx_quants (codes -32..31) weighted by the sums of W (into top)."""
    X, W, WX, L, Laux, S, scales, _, _ = ws[:9]
    signed_lanes(X, 4, L, Laux, W, WX, S, scales, True)
    super_block_lanes(ws, top, 16, count, False)
    signed_lanes(top[0], 32, top[3], top[4], top[1], top[2], top[5], top[6], True)


@njit(**JIT)
def q3_k_weighted_finish(x, y, table, ws, top, off, g):
    L = lane_views(ws, off, 16)[0]
    sc = y[96:108]
    for j in range(12):
        sc[j] = 0
    for j in range(16):
        q = top[3][j, g]
        if j < 8:
            sc[j] = np.uint8(q & 0xF)
        else:
            sc[j - 8] |= np.uint8((q & 0xF) << 4)
        sc[j % 4 + 8] |= np.uint8(((q >> 4) << (2 * (j // 4))) & 0xFF)
    put_half(y, 108, top[6][g])
    _q3_k_codes(x, y, table, ws, L)


@njit(**JIT)
def q3_k_finish(x, y, table, ws, off):
    L, scales, _ = lane_views(ws, off, 16)
    max_scale, _ = largest_magnitude(scales)
    sc = y[96:108]
    for j in range(12):
        sc[j] = 0
    if max_scale != F0:
        iscale = -F32 / max_scale
        for j in range(16):
            q = np.int8(nearest(iscale * scales[j]) & 0xFF)  # the reference stores an int8
            q = np.int32(max(-32, min(31, np.int32(q))) + 32)
            if j < 8:
                sc[j] = np.uint8(q & 0xF)
            else:
                sc[j - 8] |= np.uint8((q & 0xF) << 4)
            sc[j % 4 + 8] |= np.uint8((q >> 4) << (2 * (j // 4)))
        put_half(y, 108, F1 / iscale)
    else:
        put_half(y, 108, F0)
    _q3_k_codes(x, y, table, ws, L)


@njit(**JIT)
def _q3_k_codes(x, y, table, ws, L):
    """Q3_K codes requantized against the header's scales, split into hmask and qs."""
    codes = ws[8]
    sc = y[96:108]
    dh = get_half(y, 108, table)
    sub_d = ws[5][13]
    for j in range(16):
        sub_d[j] = dh * np.float32(q3_scale(sc, j))
    requantize(x, 16, sub_d, sub_d, False, -4, 3, 4, L, ws)
    # bit 2 of the code of element 32s+i goes to bit s of hmask byte i, the rest to qs
    for i in range(32):
        m = np.int32(0)
        for s in range(8):
            m |= (codes[32 * s + i] >> 2) << s
        y[i] = np.uint8(m)
    pack_2bit(codes, y[32:96])


# ---------------------------------------------------------------- Q4_K and Q5_K


@njit(**JIT)
def k4_search(ws, nmax, rmin, nstep):
    """Sub-block scales, mins and codes of Q4_K/Q5_K, weights rms(sub-block) + |x|."""
    X, W, XM, L, Laux, S, scales, mins, _ = ws[:9]
    rms = S[15]
    for k in range(LANES):
        rms[k] = F0
    for i in range(32):
        for k in range(LANES):
            rms[k] += X[i, k] * X[i, k]
    for k in range(LANES):
        rms[k] = np.sqrt(rms[k] / F32)
    for i in range(32):
        for k in range(LANES):
            W[i, k] = rms[k] + abs(X[i, k])
    scale_min_lanes(X, W, nmax, rmin, TENTH, nstep, False, L, Laux, XM, S, scales, mins)


@njit(**JIT)
def k4_finish(x, y, table, ws, off, nmax):
    """Header of a Q4_K/Q5_K super-block written to y; its codes 0..nmax to ws's `codes`."""
    L, scales, mins = lane_views(ws, off, 8)
    max_scale = largest(scales)
    max_min = largest(mins)
    inv_scale = F63 / max_scale if max_scale > F0 else F0
    inv_min = F63 / max_min if max_min > F0 else F0
    sc = y[4:16]
    for j in range(8):
        # the reference stores the rounded value in a uint8 before clamping to 63
        ls = min(63, nearest(inv_scale * scales[j]) & 0xFF)
        lm = min(63, nearest(inv_min * mins[j]) & 0xFF)
        if j < 4:
            sc[j] = np.uint8(ls)
            sc[j + 4] = np.uint8(lm)
        else:
            sc[j + 4] = np.uint8((ls & 0xF) | ((lm & 0xF) << 4))
            sc[j - 4] |= np.uint8((ls >> 4) << 6)
            sc[j] |= np.uint8((lm >> 4) << 6)
    put_half(y, 0, max_scale / F63)
    put_half(y, 2, max_min / F63)
    _k4_codes(x, y, table, ws, L, nmax)


@njit(**JIT)
def k4_weighted_finish(x, y, table, ws, top, off, g, nmax):
    """Header of a weighted Q4_K/Q5_K super-block (its sub-block scale and min codes from
    top, clamped to 63 for Q5_K only, as the reference does) and its codes 0..nmax."""
    L = lane_views(ws, off, 8)[0]
    sc = y[4:16]
    for j in range(8):
        ls = top[3][j, g]
        lm = top[4][j, g]
        if nmax == 31:
            ls = min(63, ls)
            lm = min(63, lm)
        if j < 4:
            sc[j] = np.uint8(ls)
            sc[j + 4] = np.uint8(lm)
        else:
            sc[j + 4] = np.uint8(((ls & 0xF) | ((lm & 0xF) << 4)) & 0xFF)
            sc[j - 4] |= np.uint8(((ls >> 4) << 6) & 0xFF)
            sc[j] |= np.uint8(((lm >> 4) << 6) & 0xFF)
    put_half(y, 0, top[6][g])
    put_half(y, 2, top[7][g])
    _k4_codes(x, y, table, ws, L, nmax)


@njit(**JIT)
def _k4_codes(x, y, table, ws, L, nmax):
    """Q4_K/Q5_K codes 0..nmax requantized against the header's scales and mins."""
    sc = y[4:16]
    dh = get_half(y, 0, table)
    mh = get_half(y, 2, table)
    sub_d, sub_m = ws[5][13], ws[5][14]
    for j in range(8):
        ls, lm = scale_min_k4(sc, j)
        sub_d[j] = dh * np.float32(ls)
        sub_m[j] = mh * np.float32(lm)
    requantize(x, 32, sub_d, sub_m, True, 0, nmax, 0, L, ws)


@njit(**JIT)
def q4_k_pack(y, codes):
    """Q4_K codes: byte 32c+i holds element 64c+i (low) and 64c+32+i (high)."""
    for c in range(4):
        for i in range(32):
            y[16 + 32 * c + i] = np.uint8(codes[64 * c + i] | (codes[64 * c + 32 + i] << 4))


@njit(**JIT)
def q5_k_pack(y, codes):
    """Q5_K codes: the low nibbles as Q4_K's (from byte 48), bit 4 of element 64c+i at bit
    2c of qh byte i and of element 64c+32+i at bit 2c+1."""
    qh = y[16:48]
    for i in range(32):
        qh[i] = 0
    for c in range(4):
        for i in range(32):
            lo = codes[64 * c + i]
            hi = codes[64 * c + 32 + i]
            if lo > 15:
                lo -= 16
                qh[i] |= np.uint8(1 << (2 * c))
            if hi > 15:
                hi -= 16
                qh[i] |= np.uint8(2 << (2 * c))
            y[48 + 32 * c + i] = np.uint8(lo | (hi << 4))


# ---------------------------------------------------------------- Q6_K


@njit(**JIT)
def q6_k_search(ws, weighted):
    """Codes and scale of each sub-block; `weighted`: over the importance weights in W
    (ggml's `quantize_row_q6_K_impl`, whose header and codes then follow the reference)."""
    X, W, WX, L, Laux, S, scales, _, _ = ws[:9]
    signed_lanes(X, 32, L, Laux, W, WX, S, scales, weighted)


@njit(**JIT)
def q6_k_finish(x, y, table, ws, off):
    codes = ws[8]
    L, scales, _ = lane_views(ws, off, 16)
    max_scale, max_abs = largest_magnitude(scales)
    if max_abs < EPS:
        for i in range(y.size):
            y[i] = 0  # the reference writes an all-zero block
        return
    iscale = -F128 / max_scale
    put_half(y, 208, F1 / iscale)
    sc = y[192:208]
    for j in range(16):
        sc[j] = np.uint8(min(127, nearest(iscale * scales[j])) & 0xFF)
    dh = get_half(y, 208, table)
    sub_d = ws[5][13]
    for j in range(16):
        sub_d[j] = dh * np.float32(np.int8(sc[j]))
    requantize(x, 16, sub_d, sub_d, False, -32, 31, 32, L, ws)
    for h in range(2):
        for i in range(32):
            e = 128 * h + i
            a = codes[e]
            b = codes[e + 32]
            c = codes[e + 64]
            d4 = codes[e + 96]
            y[64 * h + i] = np.uint8((a & 0xF) | ((c & 0xF) << 4))
            y[64 * h + 32 + i] = np.uint8((b & 0xF) | ((d4 & 0xF) << 4))
            y[128 + 32 * h + i] = np.uint8(
                (a >> 4) | ((b >> 4) << 2) | ((c >> 4) << 4) | ((d4 >> 4) << 6)
            )
