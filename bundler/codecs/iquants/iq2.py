"""IQ2_XXS, IQ2_XS and IQ2_S: groups of 8 magnitudes as points of an 8-value grid (grid8),
with their signs and a 4-bit scale per sub-block under one half super-block scale d.

Byte layouts (ggml-common.h), super-blocks of 256 values:

    IQ2_XXS  half d | 8 x (u32 four grid indices, u32 four 7-bit signs + 4-bit scale << 28)
    IQ2_XS   half d | 32 x u16 (9-bit grid index | 7-bit signs << 9) | u8 scales[8]
    IQ2_S    half d | u8 qs[32] (low 8 bits of the 10-bit index) | u8 signs[32]
             | u8 qh[8] (2 high bits per group) | u8 scales[8]

IQ2_XXS has one scale per 32 values, the others one per 16 (two nibbles a byte). A value
decodes as d * (0.5 + scale) * 0.25 * value * sign. A 7-bit sign field stands for 8 signs
whose count of minus signs is even (ggml's ksigns_iq2xs: the eighth is the parity).

The encoders are ggml's `quantize_iq2_xxs` / `quantize_iq2_xs` / `quantize_iq2_s`: weights
from the importance matrix, qw * sqrt(sigma2 + x^2) (sigma2 the mean square of the super-block,
doubled for IQ2_S), or, for IQ2_S without one, sigma2 / 4 + x^2 (IQ2_XXS and IQ2_XS have no
quantizer without one: ggml asserts it). Magnitudes are searched on the lattice 2l + 1 over
trial scales (5 + s/10) / max, s in -6..6 from make_qp_quants' scale for IQ2_XXS, -9..9 for
the others, a point off the grid replaced by its best neighbour (least weighted error with
sqrt of the weights), the fit with the best weighted least-squares gain kept, then refined
once more. With an odd count of minus signs (IQ2_XXS, IQ2_XS) the value with the least
w * x^2 takes the wrong sign. All arithmetic is float32 in the reference's order.
"""

from __future__ import annotations

import numpy as np
from numba import njit

from bundler.codecs.facts import BY_NAME
from bundler.codecs.halfs import get_half, put_half
from bundler.codecs.iquants import lattice
from bundler.codecs.iquants.kinds import IQ2
from bundler.codecs.kquants.common import EPS, F0, F1, JIT, QK, TENTH, nearest
from bundler.codecs.kquants.search import qp_lanes

KINDS = IQ2
XXS, XS, S = (IQ2[name] for name in ("iq2_xxs", "iq2_xs", "iq2_s"))
#: ggml's GROUP_MAX_EPS_IQ2_S (the others use GROUP_MAX_EPS)
EPS_S = np.float32(1e-8)
F05, F025, F3, F5, F31 = (np.float32(v) for v in (0.5, 0.25, 3.0, 5.0, 31.0))
#: IQ2_S stores d * 0.9875
D_S = np.float32(0.9875)
#: Highest level of a grid coordinate.
MAXL = 2


@njit(**JIT, inline="always")
def fit_group(xv, wa, off, inv, scale, values, table, levels, kmap, neighbours, L, d2):
    """The levels of the 8 values from `off` at 1 / scale `inv` into L: the nearest lattice
    point, or, off the grid, its best neighbour at `scale`; returns (on the grid, index or
    -1 where ggml asserts)."""
    u = 0
    for i in range(8):
        q = max(0, min(MAXL, nearest(F05 * (inv * xv[off + i] - F1))))
        L[off + i] = q
        u |= q << (2 * i)
    g = kmap[u]
    if g >= 0:
        return True, np.int64(g)
    return False, lattice.best_neighbour(
        neighbours, np.int64(-g - 1), values, table, levels, xv, wa, off, scale, L, d2
    )


@njit(**JIT, inline="always")
def fit_sums(xv, w, L):
    """Weighted sums of x * q and q * q for the lattice values q = 2L + 1."""
    sumqx = F0
    sumq2 = F0
    for i in range(xv.size):
        q = np.float32(2 * L[i] + 1)
        sumqx += w[i] * xv[i] * q
        sumq2 += w[i] * q * q
    return sumqx, sumq2


def _encoder(name: str):
    """The compiled encoder `(src, dst, qw, n, lo, hi, values, table, levels, kmap,
    neighbours)` of one IQ2 type: super-blocks lo .. hi-1 of the flattened rows of n values,
    with per-column importance `qw` (empty: IQ2_S's quantizer without weights), searched on
    the grid's lattice coordinates `values` (2l + 1, float32; `table`: the same laid out for
    the long neighbour lists by `grid8.transposed`) whose levels are `levels`. Returns the
    count of super-blocks holding a NaN or infinity, or -(1 + block) for the first block
    where ggml's asserts abort (a neighbour search with no finite error, a point off the
    grid or a scale that is not >= 0: the weights overflowed)."""
    kind = KINDS[name]
    G = 32 if kind == XXS else 16  # values per sub-block (one scale each)
    ngroups = G // 8
    nsub = QK // G
    size = BY_NAME[name].type_size
    eps = EPS_S if kind == S else EPS
    ntry = 6 if kind == XXS else 9
    sigma_factor = np.float32(2.0 if kind == S else 1.0)

    @njit(**JIT)
    def encode(src, dst, qw, n, lo, hi, values, table, levels, kmap, neighbours):
        # make_qp_quants of IQ2_XXS takes its sub-blocks side by side (QX, QW, QL, QS)
        return blocks(
            src, dst, qw, n, lo, hi, values, table, levels, kmap, neighbours,
            np.empty(levels.shape[0], np.float32),
            np.empty((nsub, G), np.float32), np.empty((nsub, G), np.float32),
            np.empty((nsub, G), np.float32), np.zeros((nsub, ngroups), np.int32),
            np.zeros((nsub, ngroups), np.int64), np.empty(nsub, np.float32),
            np.empty(G, np.int32), np.empty(G, np.int32), np.empty(ngroups, np.bool_),
            np.empty(ngroups, np.bool_), np.empty((G, nsub), np.float32),
            np.empty((G, nsub), np.float32), np.empty((G, nsub), np.int32),
            np.empty((8, nsub), np.float32), np.empty(nsub, np.float32),
        )  # fmt: skip

    @njit(**lattice.NO_NRT)
    def blocks(
        src, dst, qw, n, lo, hi, values, table, levels, kmap, neighbours, d2,
        XV, W, WA, signs, index, scales, L, Laux, on, on_aux, QX, QW, QL, QS, qscale,
    ):  # fmt: skip
        weighted = qw.size > 0
        bad = 0
        for b in range(lo, hi):
            x, y, col, sigma2, finite = lattice.begin(src, dst, b, size, n, sigma_factor)
            if not finite:
                bad += 1
                continue
            for ib in range(nsub):
                for i in range(G):
                    v = x[ib * G + i]
                    if weighted:
                        W[ib, i] = qw[col + ib * G + i] * np.sqrt(sigma2 + v * v)
                    else:
                        W[ib, i] = F025 * sigma2 + v * v
                    WA[ib, i] = np.sqrt(W[ib, i])
                for k in range(ngroups):
                    s = 0
                    nflip = 0
                    for i in range(8):
                        v = x[ib * G + 8 * k + i]
                        if v >= F0:
                            XV[ib, 8 * k + i] = v
                        else:
                            XV[ib, 8 * k + i] = -v
                            nflip += 1
                            s |= 1 << i
                    if kind != S and nflip % 2:
                        imin = 0
                        v = x[ib * G + 8 * k]
                        least = W[ib, 8 * k] * v * v
                        for i in range(1, 8):
                            v = x[ib * G + 8 * k + i]
                            ax = W[ib, 8 * k + i] * v * v
                            if ax < least:
                                least = ax
                                imin = i
                        XV[ib, 8 * k + imin] = -XV[ib, 8 * k + imin]
                        s ^= 1 << imin
                    signs[ib, k] = s & 127 if kind != S else s
            if kind == XXS:
                for ib in range(nsub):
                    for i in range(G):
                        QX[i, ib] = XV[ib, i]
                        QW[i, ib] = W[ib, i]
                qp_lanes(QX, QW, 4, QL, QS, qscale)
            max_scale = F0
            for ib in range(nsub):
                xv = XV[ib]
                w = W[ib]
                wa = WA[ib]
                for k in range(ngroups):
                    index[ib, k] = -1
                mx = xv[0]
                for i in range(1, G):
                    mx = mx if mx > xv[i] else xv[i]
                scales[ib] = F0
                if mx < eps:
                    continue
                if kind == XXS:
                    scale = qscale[ib]
                    base = scale * F3
                    if base <= F0:
                        continue
                else:
                    scale = mx / F5
                    base = mx
                best = F0
                for k in range(ngroups):
                    on[k] = True
                    for i in range(8):
                        L[8 * k + i] = 0
                for step in range(-ntry, ntry + 1):
                    inv = (F5 + np.float32(step) * TENTH) / base
                    this_scale = F1 / inv
                    for k in range(ngroups):
                        on_aux[k], g = fit_group(
                            xv,
                            wa,
                            8 * k,
                            inv,
                            this_scale,
                            values,
                            table,
                            levels,
                            kmap,
                            neighbours,
                            Laux,
                            d2,
                        )
                        if g < 0:
                            return -(1 + b)
                    sumqx, sumq2 = fit_sums(xv, w, Laux)
                    if sumq2 > F0 and sumqx * sumqx > best * sumq2:
                        for i in range(G):
                            L[i] = Laux[i]
                        for k in range(ngroups):
                            on[k] = on_aux[k]
                        scale = sumqx / sumq2
                        best = scale * sumqx
                refit = scale > F0
                if kind != XXS:
                    all_on = True
                    for k in range(ngroups):
                        all_on = all_on and on[k]
                    refit = refit and not all_on
                if refit:
                    inv = F1 / scale
                    for k in range(ngroups):
                        if kind == XXS or not on[k]:
                            _, g = fit_group(
                                xv,
                                wa,
                                8 * k,
                                inv,
                                scale,
                                values,
                                table,
                                levels,
                                kmap,
                                neighbours,
                                L,
                                d2,
                            )
                            if g < 0:
                                return -(1 + b)
                    sumqx, sumq2 = fit_sums(xv, w, L)
                    if sumq2 > F0:
                        scale = sumqx / sumq2
                if scale < F0:
                    scale = -scale
                    for k in range(ngroups):
                        signs[ib, k] = ~signs[ib, k] & (127 if kind != S else 255)
                for k in range(ngroups):
                    u = 0
                    for i in range(8):
                        u |= L[8 * k + i] << (2 * i)
                    index[ib, k] = kmap[u]
                    if kmap[u] < 0:
                        return -(1 + b)
                if not scale >= F0:
                    return -(1 + b)
                scales[ib] = scale
                max_scale = max_scale if max_scale > scale else scale
            if max_scale == F0:
                continue
            d = max_scale / F31
            put_half(y, 0, d * D_S if kind == S else d)
            inv = F1 / d
            for ib in range(nsub):
                ls = max(0, min(15, nearest(F05 * (inv * scales[ib] - F1))))
                for k in range(ngroups):
                    g = max(0, index[ib, k])  # -1: the sub-block is zero
                    s = signs[ib, k] if index[ib, k] >= 0 else 0
                    if kind == XXS:
                        y[2 + 8 * ib + k] = g
                        bits = s << (7 * k)
                        for t in range(4):
                            y[6 + 8 * ib + t] |= (bits >> (8 * t)) & 0xFF
                    elif kind == XS:
                        word = g | (s << 9)
                        y[2 + 2 * (2 * ib + k)] = word & 0xFF
                        y[3 + 2 * (2 * ib + k)] = word >> 8
                    else:
                        i8 = 2 * ib + k
                        y[2 + i8] = g & 0xFF
                        y[34 + i8] = s
                        y[66 + i8 // 4] |= (g >> 8) << (2 * (i8 % 4))
                if kind == XXS:
                    y[9 + 8 * ib] |= ls << 4
                elif ib % 2 == 0:
                    y[size - 8 + ib // 2] = ls
                else:
                    y[size - 8 + ib // 2] |= ls << 4
        return bad

    return encode


@njit(**JIT)
def _sign(s, j):
    """Whether value j of a group with 7-bit sign field s is negative (ksigns_iq2xs: the
    eighth sign is the parity of the seven)."""
    if j < 7:
        return (s >> j) & 1
    p = s ^ (s >> 4)
    p ^= p >> 2
    p ^= p >> 1
    return p & 1


def _decoder(name: str):
    """The compiled decoder `(raw, out, table, values, lo, hi)` of one IQ2 type."""
    kind = KINDS[name]
    size = BY_NAME[name].type_size

    @njit(**JIT)
    def decode(raw, out, table, values, lo, hi):
        for b in range(lo, hi):
            y = raw[b * size : (b + 1) * size]
            o = out[b * QK : (b + 1) * QK]
            d = get_half(y, 0, table)
            for ib in range(QK // 32):
                for grp in range(4):
                    if kind == XXS:
                        aux1 = (
                            np.uint32(y[6 + 8 * ib])
                            | (np.uint32(y[7 + 8 * ib]) << 8)
                            | (np.uint32(y[8 + 8 * ib]) << 16)
                            | (np.uint32(y[9 + 8 * ib]) << 24)
                        )
                        db = d * (F05 + np.float32(aux1 >> 28)) * F025
                        g = np.int32(y[2 + 8 * ib + grp])
                        s7 = np.int32((aux1 >> (7 * grp)) & 127)
                        s8 = s7 | (_sign(s7, 7) << 7)
                    else:
                        sc = np.int32(y[size - 8 + ib])
                        nib = sc & 0xF if grp < 2 else sc >> 4
                        db = d * (F05 + np.float32(nib)) * F025
                        if kind == XS:
                            word = np.int32(y[2 + 8 * ib + 2 * grp]) | (
                                np.int32(y[3 + 8 * ib + 2 * grp]) << 8
                            )
                            g = word & 511
                            s7 = word >> 9
                            s8 = s7 | (_sign(s7, 7) << 7)
                        else:
                            g = np.int32(y[2 + 4 * ib + grp]) | (
                                (np.int32(y[66 + ib]) << (8 - 2 * grp)) & 0x300
                            )
                            s8 = np.int32(y[34 + 4 * ib + grp])
                    at = 32 * ib + 8 * grp
                    for j in range(8):
                        v = db * values[g, j]
                        o[at + j] = -v if (s8 >> j) & 1 else v
        return 0

    return decode


ENCODERS = {name: _encoder(name) for name in KINDS}
DECODERS = {name: _decoder(name) for name in KINDS}


def encoder(name: str):
    """The compiled encoder of IQ2 type `name` (see `_encoder`)."""
    return ENCODERS[name]


def decoder(name: str):
    """The compiled decoder of IQ2 type `name` (see `_decoder`)."""
    return DECODERS[name]
