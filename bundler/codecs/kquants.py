"""Kernels of the K-quants: Q2_K, Q3_K, Q4_K, Q5_K, Q6_K and Q8_K (256-value super-blocks).

Encoders reproduce ggml's reference quantizers (`quantize_row_<type>_ref`, no importance
matrix) byte for byte: every step is float32 arithmetic in the reference's order, without
fused multiply-add, and codes are rounded with ggml's `nearest_int` (add 1.5 * 2^23, read the
mantissa: round half to even). Facts and search parameters are those of the reference notes
(shared K-quant section); the layouts are in `facts.py` and ggml's `ggml-common.h`.

Each kernel works on the flattened rows (whole super-blocks are contiguous), runs in parallel
over chunks of super-blocks, and counts the super-blocks that hold a NaN or infinity so that
the registry can refuse them by position.

The per-sub-block searches, where the time goes, run on LANES sub-blocks at once (those of
two or four super-blocks), laid out so that the compiler vectorises across sub-blocks while
each sub-block still sees exactly the reference's sequence of operations; the rest of a
super-block (scale quantization, requantization, packing) follows the reference directly.
"""

from __future__ import annotations

import numpy as np
from numba import njit, prange

from bundler.codecs.facts import TABLE
from bundler.codecs.halfs import HALF_TO_F32, f32_bits, f32_from_bits, f32_to_f16_bits
from bundler.codecs.registry import Kernel

# Block bytes of each K-quant, from the facts table (compile-time constants in the kernels).
_TYPE_SIZE = {f.name: f.type_size for f in TABLE}
Q2_K_BYTES = _TYPE_SIZE["q2_k"]
Q3_K_BYTES = _TYPE_SIZE["q3_k"]
Q4_K_BYTES = _TYPE_SIZE["q4_k"]
Q5_K_BYTES = _TYPE_SIZE["q5_k"]
Q6_K_BYTES = _TYPE_SIZE["q6_k"]
Q8_K_BYTES = _TYPE_SIZE["q8_k"]

QK = 256
#: Super-blocks per parallel work item.
_CHUNK = 16

#: Which K-quant a shared kernel encodes.
_Q2, _Q3, _Q4, _Q5, _Q6, _Q8 = range(6)

_F0 = np.float32(0.0)
_F1 = np.float32(1.0)
_ROUND_MAGIC = np.float32(12582912.0)  # 1.5 * 2^23
_TENTH = np.float32(0.1)
_EPS = np.float32(1e-15)  # ggml's GROUP_MAX_EPS
_F15 = np.float32(15.0)
_F32 = np.float32(32.0)
_F63 = np.float32(63.0)
_F127 = np.float32(127.0)
_F128 = np.float32(128.0)

_JIT = {"cache": True, "nogil": True, "error_model": "numpy"}
_PAR = {**_JIT, "parallel": True}


# ---------------------------------------------------------------- scalar helpers


@njit(**_JIT)
def _nearest(f):
    """ggml's nearest_int: round half to even through the mantissa of f + 1.5*2^23."""
    v = np.float32(f + _ROUND_MAGIC)
    return np.int32(f32_bits(v) & np.uint32(0x7FFFFF)) - np.int32(0x400000)


@njit(**_JIT)
def _put_half(out, at, f):
    h = f32_to_f16_bits(f)
    out[at] = np.uint8(h & np.uint16(0xFF))
    out[at + 1] = np.uint8(h >> np.uint16(8))


@njit(**_JIT)
def _get_half(raw, at, table):
    return table[np.int32(raw[at]) | (np.int32(raw[at + 1]) << 8)]


@njit(**_JIT)
def _max_abs_bits(x):
    """The largest bit pattern of |x| (an integer reduction, so it vectorises); a pattern
    from 0x7F800000 up means the block holds an infinity or a NaN."""
    m = np.uint32(0)
    for i in range(x.size):
        m = max(m, f32_bits(x[i]) & np.uint32(0x7FFFFFFF))
    return m


@njit(**_JIT)
def _nonfinite(x):
    return 1 if _max_abs_bits(x) >= np.uint32(0x7F800000) else 0


# ---------------------------------------------------------------- sub-block searches
#
# The searches run on K sub-blocks at once: X[i, k] is element i of sub-block k, and every
# per-sub-block quantity is a row of K lanes. Each lane performs exactly the reference's
# sequence of float32 operations for its sub-block (the inner loops over lanes carry no
# dependency, so the compiler can vectorise across sub-blocks without reordering any sum);
# where the reference branches per sub-block, the lanes select without branching.


@njit(**_JIT)
def _scale_min_lanes(X, W, nmax, rmin, rdelta, nstep, use_mad, L, Laux, XM, S, scale, the_min):
    """Codes 0..nmax, scale and min of each sub-block (ggml's make_qkx2_quants).

    Starts from the full-range grid, then tries `nstep + 1` grids scaled by
    (nmax + rmin + s*rdelta) / (max - min), keeping the one with the least weighted error
    (|err| when `use_mad`, else err^2); each grid's scale and min are the weighted least
    squares fit, the min clamped to <= 0. A grid that wins becomes the origin (its min) of
    the next ones, as in the reference. Fills L (n, K), scale[k] and the_min[k] (= -min).
    """
    n, K = X.shape
    lo, hi, sum_w, sum_x, span = S[0], S[1], S[2], S[3], S[4]
    iscale, best, sl, sl2, sxl = S[5], S[6], S[7], S[8], S[9]
    ts, tm, err, flat, upd = S[10], S[11], S[12], S[13], S[14]
    for k in range(K):
        lo[k] = X[0, k]
        hi[k] = X[0, k]
        sum_w[k] = W[0, k]
        sum_x[k] = W[0, k] * X[0, k]
    for i in range(1, n):
        for k in range(K):
            v = X[i, k]
            lo[k] = v if v < lo[k] else lo[k]
            hi[k] = v if v > hi[k] else hi[k]
            sum_w[k] += W[i, k]
            sum_x[k] += W[i, k] * v
    fmax = np.float32(nmax)
    for k in range(K):
        lo[k] = _F0 if lo[k] > _F0 else lo[k]
        flat[k] = _F1 if hi[k] == lo[k] else _F0
        span[k] = hi[k] - lo[k]
        iscale[k] = fmax / span[k]
        scale[k] = _F1 / iscale[k]
        best[k] = _F0
    for i in range(n):
        for k in range(K):
            XM[i, k] = X[i, k] - lo[k]
    for i in range(n):
        for k in range(K):
            q = min(nmax, max(0, _nearest(iscale[k] * XM[i, k])))
            L[i, k] = q
            diff = scale[k] * np.float32(q) + lo[k] - X[i, k]
            diff = abs(diff) if use_mad else diff * diff
            best[k] += W[i, k] * diff
    for step in range(nstep + 1):
        grid = rmin + rdelta * np.float32(step) + fmax
        for k in range(K):
            iscale[k] = grid / span[k]
            sl[k] = _F0
            sl2[k] = _F0
            sxl[k] = _F0
            err[k] = _F0
        for i in range(n):
            for k in range(K):
                q = min(nmax, max(0, _nearest(iscale[k] * XM[i, k])))
                Laux[i, k] = q
                fq = np.float32(q)
                wq = W[i, k] * fq
                sl[k] += wq
                sl2[k] += wq * fq
                sxl[k] += wq * X[i, k]
        for k in range(K):
            det = sum_w[k] * sl2[k] - sl[k] * sl[k]
            a = (sum_w[k] * sxl[k] - sum_x[k] * sl[k]) / det
            m = (sl2[k] * sum_x[k] - sl[k] * sxl[k]) / det
            positive = m > _F0  # a min above zero is clamped, the scale refitted
            ts[k] = sxl[k] / sl2[k] if positive else a
            tm[k] = _F0 if positive else m
            upd[k] = _F1 if det > _F0 else _F0
        for i in range(n):
            for k in range(K):
                diff = ts[k] * np.float32(Laux[i, k]) + tm[k] - X[i, k]
                diff = abs(diff) if use_mad else diff * diff
                err[k] += W[i, k] * diff
        any_upd = False
        for k in range(K):
            take = (upd[k] != _F0) & (err[k] < best[k]) & (flat[k] == _F0)
            upd[k] = _F1 if take else _F0
            best[k] = err[k] if take else best[k]
            scale[k] = ts[k] if take else scale[k]
            lo[k] = tm[k] if take else lo[k]
            span[k] = hi[k] - lo[k]
            any_upd |= take
        if any_upd:
            # branch-free blend (upd is 0 or 1); an unchanged lane's XM is recomputed exactly
            for i in range(n):
                for k in range(K):
                    L[i, k] += (Laux[i, k] - L[i, k]) * np.int32(upd[k])
                    XM[i, k] = X[i, k] - lo[k]
    for k in range(K):
        the_min[k] = -lo[k]
        if flat[k] != _F0:
            scale[k] = _F0
            for i in range(n):
                L[i, k] = 0


@njit(**_JIT)
def _signed_max_lanes(X, vmax, amax):
    """Per lane the value of largest magnitude and that magnitude; the first wins ties."""
    n, K = X.shape
    for k in range(K):
        vmax[k] = _F0
        amax[k] = _F0
    for i in range(n):
        for k in range(K):
            ax = abs(X[i, k])
            big = ax > amax[k]
            amax[k] = ax if big else amax[k]
            vmax[k] = X[i, k] if big else vmax[k]


@njit(**_JIT)
def _signed_lanes(X, nmax, L, Laux, W, WX, S, scale):
    """Codes 0..2*nmax-1 (offset nmax) and signed scale of each sub-block, weights x^2
    (ggml's make_qx_quants with rmse_type 1): the grid -nmax/max, then the grids
    -(nmax + s/10)/max for s = -9..9, keeping the best weighted least-squares fit."""
    n, K = X.shape
    vmax, amax, iscale, sumlx, suml2, best = S[0], S[1], S[2], S[3], S[4], S[5]
    upd = S[6]
    _signed_max_lanes(X, vmax, amax)
    fmax = np.float32(nmax)
    for i in range(n):
        for k in range(K):
            W[i, k] = X[i, k] * X[i, k]
            WX[i, k] = W[i, k] * X[i, k]
    for k in range(K):
        iscale[k] = -fmax / vmax[k]
        sumlx[k] = _F0
        suml2[k] = _F0
    for i in range(n):
        for k in range(K):
            q = max(-nmax, min(nmax - 1, _nearest(iscale[k] * X[i, k])))
            L[i, k] = q + nmax
            fq = np.float32(q)
            sumlx[k] += WX[i, k] * fq
            suml2[k] += W[i, k] * fq * fq
    for k in range(K):
        scale[k] = sumlx[k] / suml2[k] if suml2[k] != _F0 else _F0
        best[k] = scale[k] * sumlx[k]
    for step in range(-9, 10):
        if step == 0:
            continue
        grid = -(fmax + _TENTH * np.float32(step))
        for k in range(K):
            iscale[k] = grid / vmax[k]
            sumlx[k] = _F0
            suml2[k] = _F0
        for i in range(n):
            for k in range(K):
                q = max(-nmax, min(nmax - 1, _nearest(iscale[k] * X[i, k])))
                Laux[i, k] = q + nmax
                fq = np.float32(q)
                sumlx[k] += WX[i, k] * fq
                suml2[k] += W[i, k] * fq * fq
        any_upd = False
        for k in range(K):
            take = (suml2[k] > _F0) & (sumlx[k] * sumlx[k] > best[k] * suml2[k])
            fit = sumlx[k] / suml2[k]
            upd[k] = _F1 if take else _F0
            scale[k] = fit if take else scale[k]
            best[k] = fit * sumlx[k] if take else best[k]
            any_upd |= take
        if any_upd:
            for i in range(n):
                for k in range(K):
                    L[i, k] += (Laux[i, k] - L[i, k]) * np.int32(upd[k])
    for k in range(K):
        if amax[k] < _EPS:
            scale[k] = _F0
            for i in range(n):
                L[i, k] = 0


@njit(**_JIT)
def _q3_lanes(X, L, W, WX, S, scale):
    """Codes 0..7 (offset 4) and signed scale of each Q3_K sub-block (ggml's make_q3_quants
    with rmse): the grid -4/max, then up to five rounds of coordinate descent on the
    weighted (x^2) least-squares objective. A lane whose round changed nothing would change
    nothing in a further round either, so running the lanes until all settle is exact."""
    n, K = X.shape
    nmax = 4
    vmax, amax, sumlx, suml2 = S[0], S[1], S[2], S[3]
    _signed_max_lanes(X, vmax, amax)
    for k in range(K):
        sumlx[k] = _F0
        suml2[k] = _F0
        S[4, k] = -np.float32(nmax) / vmax[k]
    for i in range(n):
        for k in range(K):
            q = max(-nmax, min(nmax - 1, _nearest(S[4, k] * X[i, k])))
            L[i, k] = q
            W[i, k] = X[i, k] * X[i, k]
            WX[i, k] = W[i, k] * X[i, k]
            fq = np.float32(q)
            sumlx[k] += WX[i, k] * fq
            suml2[k] += W[i, k] * fq * fq
    for _ in range(5):
        changed = False
        for i in range(n):
            for k in range(K):
                w = W[i, k]
                wx = WX[i, k]
                x = X[i, k]
                fl = np.float32(L[i, k])
                slx0 = sumlx[k] - wx * fl
                sl20 = suml2[k] - w * fl * fl
                q = max(-nmax, min(nmax - 1, _nearest(x * sl20 / slx0)))
                fq = np.float32(q)
                slx = slx0 + wx * fq
                sl2 = sl20 + w * fq * fq
                take = (
                    (slx0 > _F0)
                    & (q != L[i, k])
                    & (sl2 > _F0)
                    & (slx * slx * suml2[k] > sumlx[k] * sumlx[k] * sl2)
                )
                L[i, k] = q if take else L[i, k]
                sumlx[k] = slx if take else sumlx[k]
                suml2[k] = sl2 if take else suml2[k]
                changed |= take
        if not changed:
            break
    for k in range(K):
        zero = amax[k] < _EPS
        scale[k] = sumlx[k] / suml2[k] if suml2[k] > _F0 else _F0
        if zero:
            scale[k] = _F0
        for i in range(n):
            L[i, k] = 0 if zero else L[i, k] + nmax


# ---------------------------------------------------------------- packing helpers


@njit(**_JIT)
def _pack_2bit(L, qs):
    """Four 2-bit codes per byte: byte 32h+l holds the low bits of elements 128h+l+32s at
    bits 2s."""
    for h in range(2):
        for i in range(32):
            e = 128 * h + i
            qs[32 * h + i] = np.uint8(
                (L[e] & 3)
                | ((L[e + 32] & 3) << 2)
                | ((L[e + 64] & 3) << 4)
                | ((L[e + 96] & 3) << 6)
            )


@njit(**_JIT)
def _scale_min_k4(sc, j):
    if j < 4:
        return np.int32(sc[j] & 63), np.int32(sc[j + 4] & 63)
    s = np.int32(sc[j + 4] & 0xF) | (np.int32(sc[j - 4] >> 6) << 4)
    m = np.int32(sc[j + 4] >> 4) | (np.int32(sc[j] >> 6) << 4)
    return s, m


@njit(**_JIT)
def _q3_scale(sc, j):
    low = np.int32(sc[j] & 0xF) if j < 8 else np.int32(sc[j - 8] >> 4)
    high = (np.int32(sc[8 + j % 4]) >> (2 * (j // 4))) & 3
    return (low | (high << 4)) - 32


# ---------------------------------------------------------------- workspace and driver

#: Sub-blocks searched side by side (a multiple of 16 and of 8, wide enough to vectorise).
LANES = 32


@njit(**_JIT)
def _workspace(n):
    """Scratch of one worker: lane arrays for sub-blocks of n values, codes of one block."""
    return (
        np.empty((n, LANES), np.float32),  # X
        np.empty((n, LANES), np.float32),  # W
        np.empty((n, LANES), np.float32),  # XM
        np.empty((n, LANES), np.int32),  # L
        np.empty((n, LANES), np.int32),  # Laux
        np.empty((16, LANES), np.float32),  # per-lane scalars
        np.empty(LANES, np.float32),  # scales
        np.empty(LANES, np.float32),  # mins
        np.empty(QK, np.int32),  # codes of one super-block, natural order
        np.empty(QK, np.float32),  # per-element scale of one super-block
        np.empty(QK, np.float32),  # per-element min of one super-block
    )


@njit(**_JIT)
def _gather(src, first, count, n, X):
    """X[i, k] = element i of sub-block k, lanes running over the sub-blocks of super-blocks
    first .. first+count-1; lanes past them are zero (they compute, and are ignored)."""
    nsub = QK // n
    for g in range(X.shape[1] // nsub):
        for j in range(nsub):
            k = g * nsub + j
            if g < count:
                base = (first + g) * QK + n * j
                for i in range(n):
                    X[i, k] = src[base + i]
            else:
                for i in range(n):
                    X[i, k] = _F0


@njit(**_JIT)
def _requantize(x, n, sub_d, sub_m, with_min, lo, hi, shift, L, ws):
    """Codes of one super-block from its half-rounded sub-block scales (and mins):
    clamp(nearest((x + m) / d), lo, hi) + shift, or clamp(nearest(x / d), lo, hi) + shift
    without mins, except that a sub-block whose scale is zero keeps the codes of its search
    (the reference skips it). Scales are spread per element so that the division
    vectorises."""
    codes, dd, dm = ws[8], ws[9], ws[10]
    for e in range(QK):
        dd[e] = sub_d[e // n]
    if with_min:
        for e in range(QK):
            dm[e] = sub_m[e // n]
        for e in range(QK):
            codes[e] = min(hi, max(lo, _nearest((x[e] + dm[e]) / dd[e]))) + shift
    else:
        for e in range(QK):
            codes[e] = min(hi, max(lo, _nearest(x[e] / dd[e]))) + shift
    for j in range(QK // n):
        if sub_d[j] == _F0:
            for i in range(n):
                codes[n * j + i] = L[i, j]


@njit(**_JIT)
def _lane_views(ws, off, nsub):
    """The codes, scales and mins of the super-block whose sub-blocks start at lane `off`."""
    return ws[3][:, off : off + nsub], ws[6][off : off + nsub], ws[7][off : off + nsub]


# ---------------------------------------------------------------- Q2_K


@njit(**_JIT)
def _q2_k_search(ws):
    X, W, XM, L, Laux, S, scales, mins, _ = ws[:9]
    for i in range(16):
        for k in range(LANES):
            W[i, k] = abs(X[i, k])
    _scale_min_lanes(X, W, 3, np.float32(-0.5), _TENTH, 15, True, L, Laux, XM, S, scales, mins)


@njit(**_JIT)
def _q2_k_finish(x, y, table, ws, off):
    codes = ws[8]
    L, scales, mins = _lane_views(ws, off, 16)
    max_scale = _F0
    max_min = _F0
    for j in range(16):
        if scales[j] > max_scale:
            max_scale = scales[j]
        if mins[j] > max_min:
            max_min = mins[j]
    sc = y[0:16]
    if max_scale > _F0:
        iscale = _F15 / max_scale
        for j in range(16):
            sc[j] = np.uint8(_nearest(iscale * scales[j]) & 0xFF)
        _put_half(y, 80, max_scale / _F15)
    else:
        for j in range(16):
            sc[j] = 0
        _put_half(y, 80, _F0)
    if max_min > _F0:
        imin = _F15 / max_min
        for j in range(16):
            sc[j] |= np.uint8((_nearest(imin * mins[j]) << 4) & 0xFF)
        _put_half(y, 82, max_min / _F15)
    else:
        _put_half(y, 82, _F0)
    dh = _get_half(y, 80, table)
    mh = _get_half(y, 82, table)
    sub_d, sub_m = ws[5][13], ws[5][14]
    for j in range(16):
        sub_d[j] = dh * np.float32(sc[j] & 0xF)
        sub_m[j] = mh * np.float32(sc[j] >> 4)
    _requantize(x, 16, sub_d, sub_m, True, 0, 3, 0, L, ws)
    _pack_2bit(codes, y[16:80])


@njit(**_PAR)
def _q2_k_decode(raw, out, table):
    nb = out.size // QK
    for b in prange(nb):
        y = raw[b * Q2_K_BYTES : (b + 1) * Q2_K_BYTES]
        o = out[b * QK : (b + 1) * QK]
        d = _get_half(y, 80, table)
        dmin = _get_half(y, 82, table)
        for s in range(16):
            dl = d * np.float32(y[s] & 0xF)
            ml = dmin * np.float32(y[s] >> 4)
            h = s // 8
            shift = 2 * ((s % 8) // 2)
            base = 16 + 32 * h + 16 * (s % 2)
            for i in range(16):
                q = (y[base + i] >> shift) & 3
                o[16 * s + i] = dl * np.float32(q) - ml


# ---------------------------------------------------------------- Q3_K


@njit(**_JIT)
def _q3_k_search(ws):
    X, W, WX, L, _, S, scales, _, _ = ws[:9]
    _q3_lanes(X, L, W, WX, S, scales)


@njit(**_JIT)
def _q3_k_finish(x, y, table, ws, off):
    codes = ws[8]
    L, scales, _ = _lane_views(ws, off, 16)
    max_scale = _F0
    amax = _F0
    for j in range(16):
        a = abs(scales[j])
        if a > amax:
            amax = a
            max_scale = scales[j]
    sc = y[96:108]
    for j in range(12):
        sc[j] = 0
    if max_scale != _F0:
        iscale = -_F32 / max_scale
        for j in range(16):
            q = np.int8(_nearest(iscale * scales[j]) & 0xFF)  # the reference stores an int8
            q = np.int32(max(-32, min(31, np.int32(q))) + 32)
            if j < 8:
                sc[j] = np.uint8(q & 0xF)
            else:
                sc[j - 8] |= np.uint8((q & 0xF) << 4)
            sc[j % 4 + 8] |= np.uint8((q >> 4) << (2 * (j // 4)))
        _put_half(y, 108, _F1 / iscale)
    else:
        _put_half(y, 108, _F0)
    dh = _get_half(y, 108, table)
    sub_d = ws[5][13]
    for j in range(16):
        sub_d[j] = dh * np.float32(_q3_scale(sc, j))
    _requantize(x, 16, sub_d, sub_d, False, -4, 3, 4, L, ws)
    # bit 2 of the code of element 32s+i goes to bit s of hmask byte i, the rest to qs
    m = ws[4][0]  # the search's Laux, which Q3_K does not use
    for i in range(32):
        m[i] = 0
    for s in range(8):
        for i in range(32):
            m[i] |= (codes[32 * s + i] >> 2) << s
    for i in range(32):
        y[i] = np.uint8(m[i])
    _pack_2bit(codes, y[32:96])


@njit(**_PAR)
def _q3_k_decode(raw, out, table):
    nb = out.size // QK
    for b in prange(nb):
        y = raw[b * Q3_K_BYTES : (b + 1) * Q3_K_BYTES]
        o = out[b * QK : (b + 1) * QK]
        d = _get_half(y, 108, table)
        sc = y[96:108]
        for s in range(16):
            dl = d * np.float32(_q3_scale(sc, s))
            h = s // 8
            j = (s % 8) // 2
            shift = 2 * j
            bit = 1 << (4 * h + j)
            first = 16 * (s % 2)
            for i in range(16):
                k = first + i
                q = np.int32((y[32 + 32 * h + k] >> shift) & 3)
                if not (y[k] & bit):
                    q -= 4
                o[16 * s + i] = dl * np.float32(q)


# ---------------------------------------------------------------- Q4_K and Q5_K


@njit(**_JIT)
def _k4_search(ws, nmax, rmin, nstep):
    """Sub-block scales, mins and codes of Q4_K/Q5_K, weights rms(sub-block) + |x|."""
    X, W, XM, L, Laux, S, scales, mins, _ = ws[:9]
    rms = S[15]
    for k in range(LANES):
        rms[k] = _F0
    for i in range(32):
        for k in range(LANES):
            rms[k] += X[i, k] * X[i, k]
    for k in range(LANES):
        rms[k] = np.sqrt(rms[k] / _F32)
    for i in range(32):
        for k in range(LANES):
            W[i, k] = rms[k] + abs(X[i, k])
    _scale_min_lanes(X, W, nmax, rmin, _TENTH, nstep, False, L, Laux, XM, S, scales, mins)


@njit(**_JIT)
def _k4_finish(x, y, table, ws, off, nmax):
    """Header of a Q4_K/Q5_K super-block written to y; its codes 0..nmax to ws's `codes`."""
    L, scales, mins = _lane_views(ws, off, 8)
    max_scale = _F0
    max_min = _F0
    for j in range(8):
        if scales[j] > max_scale:
            max_scale = scales[j]
        if mins[j] > max_min:
            max_min = mins[j]
    inv_scale = _F63 / max_scale if max_scale > _F0 else _F0
    inv_min = _F63 / max_min if max_min > _F0 else _F0
    sc = y[4:16]
    for j in range(8):
        # the reference stores the rounded value in a uint8 before clamping to 63
        ls = min(63, _nearest(inv_scale * scales[j]) & 0xFF)
        lm = min(63, _nearest(inv_min * mins[j]) & 0xFF)
        if j < 4:
            sc[j] = np.uint8(ls)
            sc[j + 4] = np.uint8(lm)
        else:
            sc[j + 4] = np.uint8((ls & 0xF) | ((lm & 0xF) << 4))
            sc[j - 4] |= np.uint8((ls >> 4) << 6)
            sc[j] |= np.uint8((lm >> 4) << 6)
    _put_half(y, 0, max_scale / _F63)
    _put_half(y, 2, max_min / _F63)
    dh = _get_half(y, 0, table)
    mh = _get_half(y, 2, table)
    sub_d, sub_m = ws[5][13], ws[5][14]
    for j in range(8):
        ls, lm = _scale_min_k4(sc, j)
        sub_d[j] = dh * np.float32(ls)
        sub_m[j] = mh * np.float32(lm)
    _requantize(x, 32, sub_d, sub_m, True, 0, nmax, 0, L, ws)


@njit(**_JIT)
def _q4_k_search(ws):
    _k4_search(ws, 15, np.float32(-1.0), 20)


@njit(**_JIT)
def _q4_k_finish(x, y, table, ws, off):
    _k4_finish(x, y, table, ws, off, 15)
    codes = ws[8]
    for c in range(4):
        for i in range(32):
            y[16 + 32 * c + i] = np.uint8(codes[64 * c + i] | (codes[64 * c + 32 + i] << 4))


@njit(**_JIT)
def _q5_k_search(ws):
    _k4_search(ws, 31, np.float32(-0.5), 15)


@njit(**_JIT)
def _q5_k_finish(x, y, table, ws, off):
    _k4_finish(x, y, table, ws, off, 31)
    codes = ws[8]
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


@njit(**_PAR)
def _q4_k_decode(raw, out, table):
    nb = out.size // QK
    for b in prange(nb):
        y = raw[b * Q4_K_BYTES : (b + 1) * Q4_K_BYTES]
        o = out[b * QK : (b + 1) * QK]
        d = _get_half(y, 0, table)
        dmin = _get_half(y, 2, table)
        sc = y[4:16]
        for c in range(4):
            s1, m1 = _scale_min_k4(sc, 2 * c)
            s2, m2 = _scale_min_k4(sc, 2 * c + 1)
            d1 = d * np.float32(s1)
            n1 = dmin * np.float32(m1)
            d2 = d * np.float32(s2)
            n2 = dmin * np.float32(m2)
            for i in range(32):
                q = y[16 + 32 * c + i]
                o[64 * c + i] = d1 * np.float32(q & 0xF) - n1
                o[64 * c + 32 + i] = d2 * np.float32(q >> 4) - n2


@njit(**_PAR)
def _q5_k_decode(raw, out, table):
    nb = out.size // QK
    for b in prange(nb):
        y = raw[b * Q5_K_BYTES : (b + 1) * Q5_K_BYTES]
        o = out[b * QK : (b + 1) * QK]
        d = _get_half(y, 0, table)
        dmin = _get_half(y, 2, table)
        sc = y[4:16]
        for c in range(4):
            s1, m1 = _scale_min_k4(sc, 2 * c)
            s2, m2 = _scale_min_k4(sc, 2 * c + 1)
            d1 = d * np.float32(s1)
            n1 = dmin * np.float32(m1)
            d2 = d * np.float32(s2)
            n2 = dmin * np.float32(m2)
            for i in range(32):
                q = y[48 + 32 * c + i]
                h = y[16 + i] >> (2 * c)
                o[64 * c + i] = d1 * np.float32((q & 0xF) | ((h & 1) << 4)) - n1
                o[64 * c + 32 + i] = d2 * np.float32((q >> 4) | ((h & 2) << 3)) - n2


# ---------------------------------------------------------------- Q6_K


@njit(**_JIT)
def _q6_k_search(ws):
    X, W, WX, L, Laux, S, scales, _, _ = ws[:9]
    _signed_lanes(X, 32, L, Laux, W, WX, S, scales)


@njit(**_JIT)
def _q6_k_finish(x, y, table, ws, off):
    codes = ws[8]
    L, scales, _ = _lane_views(ws, off, 16)
    max_scale = _F0
    max_abs = _F0
    for j in range(16):
        if abs(scales[j]) > max_abs:
            max_abs = abs(scales[j])
            max_scale = scales[j]
    if max_abs < _EPS:
        for i in range(Q6_K_BYTES):
            y[i] = 0  # the reference writes an all-zero block
        return
    iscale = -_F128 / max_scale
    _put_half(y, 208, _F1 / iscale)
    sc = y[192:208]
    for j in range(16):
        sc[j] = np.uint8(min(127, _nearest(iscale * scales[j])) & 0xFF)
    dh = _get_half(y, 208, table)
    sub_d = ws[5][13]
    for j in range(16):
        sub_d[j] = dh * np.float32(np.int8(sc[j]))
    _requantize(x, 16, sub_d, sub_d, False, -32, 31, 32, L, ws)
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


@njit(**_PAR)
def _q6_k_decode(raw, out, table):
    nb = out.size // QK
    for b in prange(nb):
        y = raw[b * Q6_K_BYTES : (b + 1) * Q6_K_BYTES]
        o = out[b * QK : (b + 1) * QK]
        d = _get_half(y, 208, table)
        for h in range(2):
            for i in range(32):
                s = 192 + 8 * h + i // 16
                lo = y[64 * h + i]
                hi = y[64 * h + 32 + i]
                qh = y[128 + 32 * h + i]
                q1 = np.int32((lo & 0xF) | ((qh & 3) << 4)) - 32
                q2 = np.int32((hi & 0xF) | (((qh >> 2) & 3) << 4)) - 32
                q3 = np.int32((lo >> 4) | (((qh >> 4) & 3) << 4)) - 32
                q4 = np.int32((hi >> 4) | (((qh >> 6) & 3) << 4)) - 32
                e = 128 * h + i
                o[e] = d * np.float32(np.int8(y[s])) * np.float32(q1)
                o[e + 32] = d * np.float32(np.int8(y[s + 2])) * np.float32(q2)
                o[e + 64] = d * np.float32(np.int8(y[s + 4])) * np.float32(q3)
                o[e + 96] = d * np.float32(np.int8(y[s + 6])) * np.float32(q4)


# ---------------------------------------------------------------- K-quant encoder


@njit(**_JIT)
def _search(kind, ws):
    if kind == _Q2:
        _q2_k_search(ws)
    elif kind == _Q3:
        _q3_k_search(ws)
    elif kind == _Q4:
        _q4_k_search(ws)
    elif kind == _Q5:
        _q5_k_search(ws)
    else:
        _q6_k_search(ws)


@njit(**_JIT)
def _finish(kind, x, y, table, ws, off):
    if kind == _Q2:
        _q2_k_finish(x, y, table, ws, off)
    elif kind == _Q3:
        _q3_k_finish(x, y, table, ws, off)
    elif kind == _Q4:
        _q4_k_finish(x, y, table, ws, off)
    elif kind == _Q5:
        _q5_k_finish(x, y, table, ws, off)
    else:
        _q6_k_finish(x, y, table, ws, off)


@njit(**_PAR)
def _encode(kind, src, dst, table):
    """Encode every super-block of `src` into `dst` as K-quant `kind`; returns
    how many super-blocks held a NaN or infinity. The sub-blocks of LANES // (256 / n)
    super-blocks (n values each) are searched side by side."""
    nb = src.size // QK
    size = dst.size // max(nb, 1)
    n = 32 if kind in (_Q4, _Q5) else 16
    group = LANES * n // QK
    bad = 0
    for c in prange((nb + _CHUNK - 1) // _CHUNK):
        ws = _workspace(n)
        lo = c * _CHUNK
        hi = min(nb, lo + _CHUNK)
        count = 0
        for b in range(lo, hi):
            count += _nonfinite(src[b * QK : (b + 1) * QK])
        for first in range(lo, hi, group):
            m = min(group, hi - first)
            _gather(src, first, m, n, ws[0])
            _search(kind, ws)
            for g in range(m):
                b = first + g
                y = dst[b * size : (b + 1) * size]
                _finish(kind, src[b * QK : (b + 1) * QK], y, table, ws, g * (QK // n))
        bad += count
    return bad


# ---------------------------------------------------------------- Q8_K


@njit(**_PAR)
def _q8_k_encode(src, dst):
    nb = src.size // QK
    bad = 0
    for b in prange(nb):
        x = src[b * QK : (b + 1) * QK]
        y = dst[b * Q8_K_BYTES : (b + 1) * Q8_K_BYTES]
        top = _max_abs_bits(x)
        bad += 1 if top >= np.uint32(0x7F800000) else 0
        for i in range(Q8_K_BYTES):
            y[i] = 0
        if top == 0:
            continue
        vmax = _F0
        for i in range(QK):  # the first value of largest magnitude, as the reference picks
            if f32_bits(x[i]) & np.uint32(0x7FFFFFFF) == top:
                vmax = x[i]
                break
        iscale = -_F127 / vmax
        for j in range(16):
            total = 0
            for i in range(16):
                q = np.int8(min(127, _nearest(iscale * x[16 * j + i])) & 0xFF)
                y[4 + 16 * j + i] = np.uint8(q & 0xFF)
                total += np.int32(q)
            y[260 + 2 * j] = np.uint8(total & 0xFF)
            y[261 + 2 * j] = np.uint8((total >> 8) & 0xFF)
        bits = f32_bits(np.float32(_F1 / iscale))
        for k in range(4):
            y[k] = np.uint8((bits >> np.uint32(8 * k)) & np.uint32(0xFF))
    return bad


@njit(**_PAR)
def _q8_k_decode(raw, out, table):
    nb = out.size // QK
    for b in prange(nb):
        y = raw[b * Q8_K_BYTES : (b + 1) * Q8_K_BYTES]
        bits = (
            np.uint32(y[0])
            | (np.uint32(y[1]) << 8)
            | (np.uint32(y[2]) << 16)
            | (np.uint32(y[3]) << 24)
        )
        d = f32_from_bits(np.uint32(bits))
        for i in range(QK):
            out[b * QK + i] = d * np.float32(np.int8(y[4 + i]))


# ---------------------------------------------------------------- registry interface


def _flat(a: np.ndarray) -> np.ndarray:
    if not a.flags.c_contiguous:
        raise ValueError("K-quant kernels need C-contiguous arrays")
    return a.reshape(-1)


def _encoder(kind):
    def encode(src: np.ndarray, dst: np.ndarray) -> int:
        """Encode float32 rows into K-quant rows; returns the count of non-finite blocks."""
        if kind == _Q8:
            return int(_q8_k_encode(_flat(src), _flat(dst)))
        return int(_encode(kind, _flat(src), _flat(dst), HALF_TO_F32))

    return encode


def _decoder(kernel):
    def decode(raw: np.ndarray, dst: np.ndarray) -> None:
        """Decode K-quant rows into float32 rows."""
        kernel(_flat(raw), _flat(dst), HALF_TO_F32)

    return decode


KERNELS = {
    "q2_k": Kernel(_encoder(_Q2), _decoder(_q2_k_decode)),
    "q3_k": Kernel(_encoder(_Q3), _decoder(_q3_k_decode)),
    "q4_k": Kernel(_encoder(_Q4), _decoder(_q4_k_decode)),
    "q5_k": Kernel(_encoder(_Q5), _decoder(_q5_k_decode)),
    "q6_k": Kernel(_encoder(_Q6), _decoder(_q6_k_decode)),
    "q8_k": Kernel(_encoder(_Q8), _decoder(_q8_k_decode)),
}
