"""The scratch arrays of one encoding worker, and the steps every K-quant encoder shares:
gathering sub-blocks into lanes, picking one super-block's results out of them, finding
the largest scale, and requantizing against the half-rounded scales."""

from __future__ import annotations

import numpy as np
from numba import njit

from bundler.codecs.kquants.common import F0, JIT, LANES, QK, nearest
from bundler.codecs.kquants.search import importance_lanes


@njit(**JIT)
def workspace(n, lanes=LANES):
    """Scratch of one worker: lane arrays for sub-blocks of n values, codes of one block."""
    return (
        np.empty((n, lanes), np.float32),  # X
        np.empty((n, lanes), np.float32),  # W
        np.empty((n, lanes), np.float32),  # XM
        np.empty((n, lanes), np.int32),  # L
        np.empty((n, lanes), np.int32),  # Laux
        np.empty((16, lanes), np.float32),  # per-lane scalars
        np.empty(lanes, np.float32),  # scales
        np.empty(lanes, np.float32),  # mins
        np.empty(QK, np.int32),  # codes of one super-block, natural order
        np.empty(QK, np.float32),  # per-element scale of one super-block
        np.empty(QK, np.float32),  # per-element min of one super-block
        np.empty(lanes, np.int64),  # first column of each lane in its row (weighted)
        np.empty(lanes, np.float32),  # sigma^2 of each lane's weights (weighted)
    )


@njit(**JIT)
def gather(src, first, count, n, X):
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
                    X[i, k] = F0


@njit(**JIT)
def weigh(src, first, count, n, qw, n_per_row, sigma_scale, plain, ws):
    """Search weights W of the gathered lanes from the importance row `qw` (one weight per
    column of a row of n_per_row values): qw * sqrt(sigma2 + x^2) where sigma2 is
    sigma_scale * (sum of x^2 over the super-block) / 256, or qw alone when `plain`."""
    col, sigma2 = ws[11], ws[12]
    nsub = QK // n
    for g in range(col.size // nsub):
        c0 = 0
        s2 = F0
        if g < count:
            base = (first + g) * QK
            c0 = base % n_per_row
            if not plain:
                total = F0
                for e in range(QK):
                    total += src[base + e] * src[base + e]
                s2 = sigma_scale * total / np.float32(QK)
        for j in range(nsub):
            col[g * nsub + j] = c0 + n * j
            sigma2[g * nsub + j] = s2
    importance_lanes(ws[0], qw, col, sigma2, plain, ws[1])


@njit(**JIT)
def super_block_lanes(ws, top, nsub, lanes, with_mins):
    """The second level of the weighted K-quants: top's lanes are the super-blocks of the
    group, its rows their sub-block scales (X), the sums of their search weights (W) and,
    `with_mins`, their mins (XM); lanes past the group are zero."""
    W, scales, mins = ws[1], ws[6], ws[7]
    n = W.shape[0]
    X2, W2, M2 = top[0], top[1], top[2]
    for g in range(X2.shape[1]):
        for j in range(nsub):
            k = g * nsub + j
            if g < lanes:
                total = F0
                for i in range(n):
                    total += W[i, k]
                X2[j, g] = scales[k]
                W2[j, g] = total
                M2[j, g] = mins[k] if with_mins else F0
            else:
                X2[j, g] = F0
                W2[j, g] = F0
                M2[j, g] = F0


@njit(**JIT)
def lane_views(ws, off, nsub):
    """The codes, scales and mins of the super-block whose sub-blocks start at lane `off`."""
    return ws[3][:, off : off + nsub], ws[6][off : off + nsub], ws[7][off : off + nsub]


@njit(**JIT)
def largest(values):
    """The largest of `values` and zero (ggml's scans start from 0 with a strict `>`)."""
    top = F0
    for j in range(values.size):
        if values[j] > top:
            top = values[j]
    return top


@njit(**JIT)
def largest_magnitude(values):
    """The first value of largest magnitude, and that magnitude (0, 0 when all are 0)."""
    signed = F0
    top = F0
    for j in range(values.size):
        a = abs(values[j])
        if a > top:
            top = a
            signed = values[j]
    return signed, top


@njit(**JIT)
def requantize(x, n, sub_d, sub_m, with_min, lo, hi, shift, L, ws):
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
            codes[e] = min(hi, max(lo, nearest((x[e] + dm[e]) / dd[e]))) + shift
    else:
        for e in range(QK):
            codes[e] = min(hi, max(lo, nearest(x[e] / dd[e]))) + shift
    for j in range(QK // n):
        if sub_d[j] == F0:
            for i in range(n):
                codes[n * j + i] = L[i, j]


@njit(**JIT)
def pack_2bit(L, qs):
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
