"""The scratch arrays of one encoding worker, and the steps every K-quant encoder shares:
gathering sub-blocks into lanes, picking one super-block's results out of them, finding
the largest scale, and requantizing against the half-rounded scales."""

from __future__ import annotations

import numpy as np
from numba import njit

from bundler.codecs.kquants.common import F0, JIT, LANES, QK, nearest


@njit(**JIT)
def workspace(n):
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
