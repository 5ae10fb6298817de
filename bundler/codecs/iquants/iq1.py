"""IQ1_S and IQ1_M: each 8 values a point of the 2048-point grid of levels -1, 0, 1 (grid8),
shifted by a delta of +-1/8, with a 3-bit scale per 32 (IQ1_S) or 16 (IQ1_M) values.

Byte layouts (ggml-common.h), per 256 values:

    IQ1_S (50 bytes)   half d | u8 qs[32] | u16 qh[8]
    IQ1_M (56 bytes)   u8 qs[32] | u8 qh[16] | u16 scales[4]

IQ1_S: the grid index of the k-th 8 values of sub-block ib is qs[4 ib + k] | bits 3k..3k+2
of qh[ib] << 8; bits 12..14 of qh[ib] are the scale s and bit 15 the sign of the delta; a
value decodes as d * (2s + 1) * (level + delta). IQ1_M: qs[2 ib + k] | 3 bits of qh[ib]
(bits 0..2 for k = 0, 4..6 for k = 1) << 8, the delta's sign in bit 3 / 7; the 3-bit scales
of the 16-value sub-blocks fill bits 0..11 of the scales (four per u16), and the half d is
split over their top nibbles.

The encoders are ggml's `quantize_row_iq1_s_impl` / `quantize_row_iq1_m_impl` (what
`ggml_quantize_chunk` calls; IQ1_S only with an importance matrix, IQ1_M with or without):
per sub-block, the values sorted (stably, as glibc's qsort sorts them), the exhaustive
search of the two boundaries splitting them into levels -1, 0, 1 with either delta (IQ1_M:
a delta per 8 values), each group of 8 put on the grid (the best of its neighbours by
weighted distance when off it) and the scale refitted; sub-block scales become 3 bits
against max / 15 (IQ1_S stores d * 1.125; IQ1_M refits d over the whole super-block and
stores it * 1.1125). All arithmetic is float32 in the reference's order, without fused
multiply-add.

Where ggml's search overflows float32 (a NaN scale, which it asserts against, or no
neighbour at a finite distance, where its fallback reads past its input) the encoders
report the block instead.
"""

from __future__ import annotations

import numpy as np
from numba import njit

from bundler.codecs.facts import BY_NAME
from bundler.codecs.halfs import f32_to_f16_bits, get_half, put_half
from bundler.codecs.iquants import lattice
from bundler.codecs.iquants.grid8 import DELTA, X_M, X_P
from bundler.codecs.iquants.kinds import IQ1_S
from bundler.codecs.kquants.common import F0, F1, JIT, nearest

QK = BY_NAME["iq1_s"].block_size
S_BYTES = BY_NAME["iq1_s"].type_size
M_BYTES = BY_NAME["iq1_m"].type_size
#: Values per sub-block, per kind.
SUB = (32, 16)
#: ggml's GROUP_MAX_EPS_IQ1_S and _IQ1_M.
EPS = (np.float32(1e-12), np.float32(1e-7))
P0, P1, P2 = (np.float32(v) for v in X_P)
M0, M1, M2 = (np.float32(v) for v in X_M)
FUDGE = (np.float32(1.125), np.float32(1.1125))
F_HALF = np.float32(0.5)
F15 = np.float32(15.0)
FLT_MAX = lattice.FLT_MAX
#: IQ1_M's delta sign bits in qh per shift kind (0: +,+  1: +,-  2: -,+  3: -,-).
MASKS = (0x00, 0x80, 0x08, 0x88)


@njit(**JIT, inline="always")
def _sort(xb, m, idx):
    """idx[0:m]: the positions of xb[0:m] in ascending order of value, equal values in
    order of position (glibc's qsort is a merge sort: stable)."""
    for j in range(m):
        idx[j] = j
    for j in range(1, m):
        v = idx[j]
        i = j - 1
        while i >= 0 and xb[idx[i]] > xb[v]:
            idx[i + 1] = idx[i]
            i -= 1
        idx[i + 1] = v


@njit(**JIT, inline="always")
def _on_grid(L, at, scale, xb, w, values, levels, kmap, nb):
    """The grid index of the levels L[at:at+8] (snapped to the best neighbour by the values
    of its delta when off the grid), whether they were on it, or index -1 for the overflow."""
    u = 0
    for j in range(8):
        u |= L[at + j] << (2 * j)
    g = kmap[u]
    if g >= 0:
        return np.int64(g), True
    start = np.int64(-g - 1)
    return lattice.best_neighbour(
        nb, start, values, lattice.NO_TABLE, levels, xb, w, at, scale, L, lattice.NO_TABLE
    ), False


@njit(**JIT, inline="always")
def _refit(xb, w, at, g, values, scale_l, sumqx, sumq2):
    """The sums of the scale fit of the 8 values from `at` on grid point g."""
    for j in range(8):
        q = values[g, j] * scale_l
        sumqx += w[at + j] * q * xb[at + j]
        sumq2 += w[at + j] * q * q
    return sumqx, sumq2


@njit(**JIT, inline="always")
def _labels(idx, m, i1, i2, L):
    for j in range(m):
        L[idx[j]] = 0 if j < i1 else (1 if j < i2 else 2)


@njit(**JIT, inline="always")
def _max_abs(xb, m):
    vmax = abs(xb[0])
    for i in range(1, m):
        a = abs(xb[i])
        vmax = vmax if vmax > a else a
    return vmax


@njit(**lattice.NO_NRT)
def _search_s(xb, w, idx, sumx, sumw, L):
    """IQ1_S's boundary search over one sorted sub-block of 32: (scale, shift 1 or -1, or 0
    when no split fits)."""
    m = 32
    sumx[0] = F0
    sumw[0] = F0
    for j in range(m):
        i = idx[j]
        sumx[j + 1] = sumx[j] + w[i] * xb[i]
        sumw[j + 1] = sumw[j] + w[i]
    best = -FLT_MAX
    scale = F0
    b1 = -1
    b2 = -1
    shift = 0
    for i1 in range(m + 1):
        a = sumx[i1] - sumx[0]
        wa = sumw[i1] - sumw[0]
        for i2 in range(i1, m + 1):
            b = sumx[i2] - sumx[i1]
            c = sumx[m] - sumx[i2]
            wb = sumw[i2] - sumw[i1]
            wc = sumw[m] - sumw[i2]
            sumqx = a * P0 + b * P1 + c * P2
            sumq2 = wa * P0 * P0 + wb * P1 * P1 + wc * P2 * P2
            if sumq2 > F0 and sumqx * sumqx > best * sumq2:
                scale = sumqx / sumq2
                best = scale * sumqx
                b1, b2, shift = i1, i2, 1
            sumqx = a * M0 + b * M1 + c * M2
            sumq2 = wa * M0 * M0 + wb * M1 * M1 + wc * M2 * M2
            if sumq2 > F0 and sumqx * sumqx > best * sumq2:
                scale = sumqx / sumq2
                best = scale * sumqx
                b1, b2, shift = i1, i2, -1
    if b1 >= 0:
        _labels(idx, m, b1, b2, L)
    return scale, shift


@njit(**lattice.NO_NRT)
def _search_m(xb, w, idx, px, pw, L):
    """IQ1_M's boundary search over one sorted sub-block of 16, with a delta sign per half:
    (scale, shift kind 0..3, or -1 when no split fits)."""
    m = 16
    for h in range(2):
        px[h, 0] = F0
        pw[h, 0] = F0
    for j in range(m):
        i = idx[j]
        h = 0 if i < m // 2 else 1
        px[h, j + 1] = px[h, j] + w[i] * xb[i]
        px[1 - h, j + 1] = px[1 - h, j]
        pw[h, j + 1] = pw[h, j] + w[i]
        pw[1 - h, j + 1] = pw[1 - h, j]
    p2 = X_P[2]
    m2 = X_M[2]
    cp1 = X_P[0] * X_P[0] - X_P[1] * X_P[1]
    cp2 = X_P[1] * X_P[1] - X_P[2] * X_P[2]
    cm1 = X_M[0] * X_M[0] - X_M[1] * X_M[1]
    cm2 = X_M[1] * X_M[1] - X_M[2] * X_M[2]
    best = -FLT_MAX
    scale = F0
    b1 = -1
    b2 = -1
    kind = -1
    for i1 in range(m + 1):
        for i2 in range(i1, m + 1):
            sx0 = px[0, i1] + px[0, i2]
            sx1 = px[1, i1] + px[1, i2]
            qxp0 = px[0, m] * p2 - sx0
            qxp1 = px[1, m] * p2 - sx1
            qxm0 = px[0, m] * m2 - sx0
            qxm1 = px[1, m] * m2 - sx1
            q2p0 = pw[0, m] * p2 * p2 + pw[0, i1] * cp1 + pw[0, i2] * cp2
            q2p1 = pw[1, m] * p2 * p2 + pw[1, i1] * cp1 + pw[1, i2] * cp2
            q2m0 = pw[0, m] * m2 * m2 + pw[0, i1] * cm1 + pw[0, i2] * cm2
            q2m1 = pw[1, m] * m2 * m2 + pw[1, i1] * cm1 + pw[1, i2] * cm2
            for k in range(4):
                sumqx = (qxp0 if k < 2 else qxm0) + (qxp1 if k % 2 == 0 else qxm1)
                sumq2 = (q2p0 if k < 2 else q2m0) + (q2p1 if k % 2 == 0 else q2m1)
                if sumq2 > F0 and sumqx * sumqx > best * sumq2:
                    scale = sumqx / sumq2
                    best = scale * sumqx
                    b1 = i1
                    b2 = i2
                    kind = k
    if b1 >= 0:
        _labels(idx, m, b1, b2, L)
    return scale, kind


@njit(**JIT, inline="always")
def _delta_of(kind, shift, k, plus, minus):
    """The grid's values with +delta or -delta for the k-th 8 values of a sub-block."""
    if kind == IQ1_S:
        return plus if shift == 1 else minus
    if k == 0:
        return plus if shift < 2 else minus
    return plus if shift % 2 == 0 else minus


@njit(**JIT, inline="always")
def _weights(x, qw, weighted, at, col, m, sigma2, w):
    for i in range(m):
        v = x[at + i]
        if weighted:
            w[i] = qw[col + at + i] * np.sqrt(sigma2 + v * v)
        else:
            w[i] = v * v


@njit(**JIT)
def encode(kind, src, dst, qw, n, lo, hi, levels, plus, minus, kmap, nb):
    """IQ1_S (kind 0, `qw` required) or IQ1_M (kind 1) super-blocks lo .. hi-1 of the
    flattened rows (n values each; `qw` the per-column importance, or empty); returns the
    count of blocks with NaN or infinity, or -(1 + block) for the first block whose
    neighbour search overflows."""
    return _blocks(
        kind, src, dst, qw, n, lo, hi, levels, plus, minus, kmap, nb,
        np.empty(32, np.float32), np.empty(32, np.int64), np.empty(32, np.int64),
        np.empty(4, np.int64), np.empty(33, np.float32), np.empty(33, np.float32),
        np.empty((2, 17), np.float32), np.empty((2, 17), np.float32),
        np.empty(16, np.float32), np.empty(16, np.int64),
    )  # fmt: skip


@njit(**lattice.NO_NRT)
def _blocks(
    kind, src, dst, qw, n, lo, hi, levels, plus, minus, kmap, nb,
    w, idx, L, index, sumx, sumw, px, pw, scales, shifts,
):  # fmt: skip
    bad = 0
    weighted = qw.size > 0
    m = SUB[kind]
    nsub = QK // m
    nbytes = S_BYTES if kind == IQ1_S else M_BYTES
    for b in range(lo, hi):
        x, y, col, sigma2, finite = lattice.begin(src, dst, b, nbytes, n, lattice.F2)
        if not finite:
            bad += 1
            continue
        max_scale = F0
        for ib in range(nsub):
            xb = x[ib * m : (ib + 1) * m]
            _weights(x, qw, weighted, ib * m, col, m, sigma2, w)
            scales[ib] = F0
            shifts[ib] = 1 if kind == IQ1_S else 0
            if _max_abs(xb, m) < EPS[kind]:
                continue
            _sort(xb, m, idx)
            if kind == IQ1_S:
                scale, shift = _search_s(xb, w, idx, sumx, sumw, L)
                if shift == 0:
                    continue
            else:
                scale, shift = _search_m(xb, w, idx, px, pw, L)
                if shift < 0:
                    continue
            if scale < F0:
                for j in range(m):
                    L[j] = 2 - L[j]
                scale = -scale
                shift = -shift if kind == IQ1_S else 3 - shift
            all_on = True
            for k in range(m // 8):
                vals = _delta_of(kind, shift, k, plus, minus)
                index[k], on = _on_grid(L, 8 * k, scale, xb, w, vals, levels, kmap, nb)
                if index[k] < 0:
                    return -(1 + b)
                all_on = all_on and on
            if not all_on:
                sumqx = F0
                sumq2 = F0
                for k in range(m // 8):
                    vals = _delta_of(kind, shift, k, plus, minus)
                    sumqx, sumq2 = _refit(xb, w, 8 * k, index[k], vals, F1, sumqx, sumq2)
                if sumqx > F0 and sumq2 > F0:
                    scale = sumqx / sumq2
            if not scale >= F0:  # a NaN: the reference asserts scale >= 0
                return -(1 + b)
            if kind == IQ1_S:
                h = 0
                for k in range(4):
                    y[2 + 4 * ib + k] = np.uint8(index[k] & 255)
                    h |= (index[k] >> 8) << (3 * k)
                y[34 + 2 * ib] = np.uint8(h & 255)
                y[35 + 2 * ib] = np.uint8(h >> 8)
            else:
                y[2 * ib] = np.uint8(index[0] & 255)
                y[2 * ib + 1] = np.uint8(index[1] & 255)
                y[32 + ib] = np.uint8((index[0] >> 8) | ((index[1] >> 8) << 4))
            scales[ib] = scale
            shifts[ib] = shift
            max_scale = max_scale if max_scale > scale else scale
        if max_scale == F0:
            continue
        d = max_scale / F15
        idv = F1 / d
        if kind == IQ1_S:
            put_half(y, 0, d * FUDGE[kind])
            for ib in range(nsub):
                ls = max(0, min(7, nearest(F_HALF * (idv * scales[ib] - F1))))
                if shifts[ib] == -1:
                    ls |= 8
                y[35 + 2 * ib] |= np.uint8(ls << 4)
            continue
        sumqx = F0
        sumq2 = F0
        for ib in range(nsub):
            ls = max(0, min(7, nearest(F_HALF * (idv * scales[ib] - F1))))
            bits = ls << (3 * (ib % 4))
            y[48 + 2 * (ib // 4)] |= np.uint8(bits & 255)
            y[49 + 2 * (ib // 4)] |= np.uint8(bits >> 8)
            y[32 + ib] |= np.uint8(MASKS[shifts[ib]])
            _weights(x, qw, weighted, ib * m, col, m, sigma2, w)
            qh = np.int64(y[32 + ib])
            for k in range(2):
                vals = _delta_of(kind, shifts[ib], k, plus, minus)
                g = np.int64(y[2 * ib + k]) + ((qh << (8 - 4 * k)) & 0x700)
                sumqx, sumq2 = _refit(
                    x[ib * m :], w, 8 * k, g, vals, np.float32(2 * ls + 1), sumqx, sumq2
                )
        if sumq2 > F0:
            d = sumqx / sumq2
        h = np.int64(f32_to_f16_bits(d * FUDGE[kind]))
        for j in range(4):
            y[49 + 2 * j] |= np.uint8(((h >> (4 * j)) & 15) << 4)
    return bad


@njit(**JIT)
def decode(raw, out, table, values, kind, lo, hi):
    """IQ1_S (kind 0) or IQ1_M (kind 1) super-blocks lo .. hi-1 to float32:
    d * (2s + 1) * (level + delta)."""
    nbytes = S_BYTES if kind == IQ1_S else M_BYTES
    for b in range(lo, hi):
        o = out[b * QK : (b + 1) * QK]
        if kind == IQ1_S:
            _decode_s(raw[b * nbytes : (b + 1) * nbytes], o, table, values)
        else:
            _decode_m(raw[b * nbytes : (b + 1) * nbytes], o, table, values)
    return 0


@njit(**JIT, inline="always")
def _decode_s(y, o, table, values):
    d = get_half(y, 0, table)
    for ib in range(8):
        qh = np.int64(y[34 + 2 * ib]) | (np.int64(y[35 + 2 * ib]) << 8)
        dl = d * np.float32(2 * ((qh >> 12) & 7) + 1)
        delta = -DELTA if qh & 0x8000 else DELTA
        for k in range(4):
            g = np.int64(y[2 + 4 * ib + k]) | (((qh >> (3 * k)) & 7) << 8)
            for j in range(8):
                o[32 * ib + 8 * k + j] = dl * (values[g, j] + delta)


@njit(**JIT, inline="always")
def _decode_m(y, o, table, values):
    sc = np.empty(4, np.int64)
    for j in range(4):
        sc[j] = np.int64(y[48 + 2 * j]) | (np.int64(y[49 + 2 * j]) << 8)
    bits = (sc[0] >> 12) | ((sc[1] >> 8) & 0xF0) | ((sc[2] >> 4) & 0xF00) | (sc[3] & 0xF000)
    d = table[bits]
    for ib in range(16):
        qh = np.int64(y[32 + ib])
        dl = d * np.float32(2 * ((sc[ib // 4] >> (3 * (ib % 4))) & 7) + 1)
        for k in range(2):
            g = np.int64(y[2 * ib + k]) | (((qh >> (4 * k)) & 7) << 8)
            delta = -DELTA if (qh >> (4 * k + 3)) & 1 else DELTA
            for j in range(8):
                o[16 * ib + 8 * k + j] = dl * (values[g, j] + delta)
