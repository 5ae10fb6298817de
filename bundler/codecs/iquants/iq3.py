"""IQ3_XXS and IQ3_S: each 4 values a point of a lattice (grid4), with signs and a 4-bit scale
per 32 values.

Byte layouts (ggml-common.h), per 256 values:

    IQ3_XXS (98 bytes)   half d | u8 qs[64] | u32 scales_and_signs[8]
    IQ3_S  (110 bytes)   half d | u8 qs[64] | u8 qh[8] | u8 signs[32] | u8 scales[4]

qs holds the lattice index of each 4 values (IQ3_S's ninth bit: bit k of qh[ib] for the k-th
4 values of sub-block ib). IQ3_XXS keeps 7 sign bits per 8 values (the eighth makes the
count of minus signs even: ggml's ksigns_iq2xs), four per u32 in bits 7j, and the scale in
the top 4 bits; it decodes as d * (0.5 + s) * 0.5 * level * sign. IQ3_S keeps 8 sign bits
per 8 values and the scales as nibbles (sub-block 2k low), decoding as
d * (1 + 2s) * level * sign.

The encoders are ggml's `quantize_row_iq3_xxs_impl` / `quantize_row_iq3_s_impl` (what
`ggml_quantize_chunk` calls, with or without an importance matrix): per 32 values, weights
x^2 (or importance * sqrt(sigma2 + x^2), sigma2 = twice the mean square of the super-block),
signs taken off (IQ3_XXS flips the least weighted value of an 8 with an odd count of minus
signs), then for each trial scale (15 + 0.2 t) / max, t in -15..15 (IQ3_XXS) or -9..9
(IQ3_S), the nearest levels, snapped to the best neighbour (weighted by sqrt(weight)) when
off the lattice, kept when the weighted least-squares fit is strictly better; the
off-lattice groups of the best trial are then re-snapped at its scale (IQ3_S re-snaps
every group) and the scale refitted. Sub-block scales become 4 bits against
max / 31 (the stored d is that times 1.0125 for IQ3_XXS, 1.033 for IQ3_S). All arithmetic
is float32 in the reference's order, without fused multiply-add.

Quirks kept: IQ3_S does not advance its qs and signs for an all-zero sub-block, so the next
sub-block's codes land in its place; where ggml's search overflows float32 (no neighbour
at a finite distance, or a NaN scale) it aborts, and the encoders report the block instead.
"""

from __future__ import annotations

import numpy as np
from numba import njit

from bundler.codecs.facts import BY_NAME
from bundler.codecs.halfs import get_half, put_half
from bundler.codecs.iquants import lattice
from bundler.codecs.iquants.kinds import IQ3_S as S
from bundler.codecs.iquants.kinds import IQ3_XXS as XXS
from bundler.codecs.iquants.lattice import NO_NRT
from bundler.codecs.kquants.common import F0, F1, JIT, nearest

#: Values per super-block and per sub-block (each with its own scale).
QK = BY_NAME["iq3_xxs"].block_size
QB = 32
XXS_BYTES = BY_NAME["iq3_xxs"].type_size
S_BYTES = BY_NAME["iq3_s"].type_size
#: Trial scale steps on each side of 15 / max, per kind.
TRIALS = (15, 9)
#: ggml's GROUP_MAX_EPS_IQ3_XXS (IQ3_S skips only an exact zero).
EPS_XXS = np.float32(1e-8)
FUDGE = (np.float32(1.0125), np.float32(1.033))
F_HALF = np.float32(0.5)
F15 = np.float32(15.0)
F31 = np.float32(31.0)
F_STEP = np.float32(0.2)


@njit(**JIT, inline="always")
def _round(xval, idv, lv, lo, hi):
    """The nearest levels of values lo .. hi-1 at inverse scale idv."""
    for i in range(lo, hi):
        lv[i] = max(0, min(7, nearest(F_HALF * (idv * xval[i] - F1))))


@njit(**JIT, inline="always")
def _snap(xval, waux, at, scale, odd, levels, kmap, nb, lv):
    """The rounded levels of the 4 values from `at`, snapped to the best neighbour at `scale`
    when off the lattice; returns (on the lattice, lattice index or -1 where the reference
    aborts)."""
    u = lv[at] | (lv[at + 1] << 3) | (lv[at + 2] << 6) | (lv[at + 3] << 9)
    g = kmap[u]
    if g >= 0:
        return True, np.int64(g)
    return False, lattice.best_neighbour(
        nb,
        np.int64(-g - 1),
        odd,
        lattice.NO_TABLE,
        levels,
        xval,
        waux,
        at,
        scale,
        lv,
        lattice.NO_TABLE,
    )


@njit(**JIT, inline="always")
def _fit(w, xval, lv):
    sumqx = F0
    sumq2 = F0
    for i in range(QB):
        q = np.float32(2 * lv[i] + 1)
        sumqx += w[i] * xval[i] * q
        sumq2 += w[i] * q * q
    return sumqx, sumq2


@njit(**NO_NRT)
def _signs(kind, xb, w, xval, signs):
    """|x| into xval and the sign bits per 8 into signs; IQ3_XXS evens each 8's count of
    minus signs by flipping its least weighted value (and keeps 7 bits)."""
    for k in range(QB // 8):
        s = 0
        nflip = 0
        for i in range(8):
            v = xb[8 * k + i]
            if v >= F0:
                xval[8 * k + i] = v
            else:
                xval[8 * k + i] = -v
                nflip += 1
                s |= 1 << i
        if kind == XXS and nflip % 2:
            imin = 0
            vmin = w[8 * k] * xb[8 * k] * xb[8 * k]
            for i in range(1, 8):
                ax = w[8 * k + i] * xb[8 * k + i] * xb[8 * k + i]
                if ax < vmin:
                    vmin = ax
                    imin = i
            xval[8 * k + imin] = -xval[8 * k + imin]
            s ^= 1 << imin
        signs[k] = s & 127 if kind == XXS else s


#: What `_search` found: a scale, an all-zero sub-block, or a block the reference aborts on.
FOUND, ZERO, ABORT = 0, 1, 2


@njit(**NO_NRT)
def _search(kind, xval, w, waux, odd, levels, kmap, nb, L, Laux, on, on_aux):
    """The sub-block's scale and status, its levels in L."""
    vmax = xval[0]
    for i in range(1, QB):
        vmax = vmax if vmax > xval[i] else xval[i]
    for i in range(QB):
        L[i] = 0
    if (kind == XXS and vmax < EPS_XXS) or (kind == S and vmax == F0):
        return F0, ZERO
    best = F0
    scale = vmax / F15
    for k in range(QB // 4):
        on[k] = kind == XXS
    for t in range(-TRIALS[kind], TRIALS[kind] + 1):
        idv = (F15 + np.float32(t) * F_STEP) / vmax
        this_scale = F1 / idv
        _round(xval, idv, Laux, 0, QB)
        for k in range(QB // 4):
            on_aux[k], g = _snap(xval, waux, 4 * k, this_scale, odd, levels, kmap, nb, Laux)
            if g < 0:
                return F0, ABORT
        sumqx, sumq2 = _fit(w, xval, Laux)
        if sumq2 > F0 and sumqx * sumqx > best * sumq2:
            scale = sumqx / sumq2
            best = scale * sumqx
            for i in range(QB):
                L[i] = Laux[i]
            for k in range(QB // 4):
                on[k] = on_aux[k]
    off = 0
    for k in range(QB // 4):
        off += 0 if on[k] else 1
    if off > 0 and scale > F0:
        idv = F1 / scale
        for k in range(QB // 4):
            if kind == XXS and on[k]:
                continue
            _round(xval, idv, L, 4 * k, 4 * k + 4)
            _, g = _snap(xval, waux, 4 * k, scale, odd, levels, kmap, nb, L)
            if g < 0:
                return F0, ABORT
        sumqx, sumq2 = _fit(w, xval, L)
        if sumq2 > F0:
            scale = sumqx / sumq2
    return scale, FOUND


@njit(**NO_NRT)
def _lattice_index(L, k, kmap):
    u = 0
    for i in range(4):
        u |= L[4 * k + i] << (3 * i)
    return kmap[u]


@njit(**JIT)
def encode(kind, src, dst, qw, n, lo, hi, odd, levels, kmap, nb):
    """IQ3_XXS (kind 0) or IQ3_S (kind 1) super-blocks lo .. hi-1 of the flattened rows (n
    values each; `qw` the per-column importance, or empty); returns the count of blocks with
    NaN or infinity, or -(1 + block) for the first block where the reference aborts."""
    return _blocks(
        kind, src, dst, qw, n, lo, hi, odd, levels, kmap, nb,
        np.empty(QB, np.float32), np.empty(QB, np.float32), np.empty(QB, np.float32),
        np.empty(QB, np.int32), np.empty(QB, np.int32), np.empty(QB // 4, np.bool_),
        np.empty(QB // 4, np.bool_), np.empty(QB // 8, np.int64),
        np.empty(QK // QB, np.float32),
    )  # fmt: skip


@njit(**NO_NRT)
def _blocks(
    kind, src, dst, qw, n, lo, hi, odd, levels, kmap, nb,
    w, waux, xval, L, Laux, on, on_aux, signs, scales,
):  # fmt: skip
    weighted = qw.size > 0
    nbytes = XXS_BYTES if kind == XXS else S_BYTES
    bad = 0
    for b in range(lo, hi):
        x, y, col, sigma2, finite = lattice.begin(src, dst, b, nbytes, n, lattice.F2)
        if not finite:
            bad += 1
            continue
        stored = 0  # IQ3_S: sub-blocks whose codes are stored so far
        max_scale = F0
        for ib in range(QK // QB):
            xb = x[ib * QB : (ib + 1) * QB]
            for i in range(QB):
                if weighted:
                    w[i] = qw[col + ib * QB + i] * np.sqrt(sigma2 + xb[i] * xb[i])
                else:
                    w[i] = xb[i] * xb[i]
                waux[i] = np.sqrt(w[i])
            _signs(kind, xb, w, xval, signs)
            scale, status = _search(kind, xval, w, waux, odd, levels, kmap, nb, L, Laux, on, on_aux)
            if status == ABORT:
                return -(1 + b)
            scales[ib] = F0
            if status == ZERO:
                continue
            if np.isnan(scale):  # the reference asserts scale >= 0
                return -(1 + b)
            if scale < F0:
                scale = -scale
                for k in range(QB // 8):
                    signs[k] = ~signs[k] & (127 if kind == XXS else 255)
            for k in range(QB // 4):
                g = _lattice_index(L, k, kmap)
                if kind == XXS:
                    y[2 + 8 * ib + k] = np.uint8(g)
                else:
                    y[2 + 8 * stored + k] = np.uint8(g & 255)
                    y[66 + ib] |= np.uint8((g >> 8) << k)
            if kind == XXS:
                packed = signs[0] | (signs[1] << 7) | (signs[2] << 14) | (signs[3] << 21)
                for j in range(4):
                    y[66 + 4 * ib + j] = np.uint8((packed >> (8 * j)) & 255)
            else:
                for k in range(QB // 8):
                    y[74 + 4 * stored + k] = np.uint8(signs[k])
                stored += 1
            scales[ib] = scale
            max_scale = max_scale if max_scale > scale else scale
        if max_scale == F0:
            if kind == XXS:
                for i in range(nbytes):
                    y[i] = 0
            continue
        d = max_scale / F31
        put_half(y, 0, d * FUDGE[kind])
        idv = F1 / d
        for ib in range(QK // QB):
            ls = max(0, min(15, nearest(F_HALF * (idv * scales[ib] - F1))))
            if kind == XXS:
                y[66 + 4 * ib + 3] |= np.uint8(ls << 4)
            else:
                y[106 + ib // 2] |= np.uint8(ls << (4 * (ib % 2)))
    return bad


@njit(**JIT)
def decode_xxs(raw, out, table, values, signs, lo, hi):
    """IQ3_XXS super-blocks lo .. hi-1 to float32."""
    for b in range(lo, hi):
        y = raw[b * XXS_BYTES : (b + 1) * XXS_BYTES]
        d = get_half(y, 0, table)
        o = out[b * QK : (b + 1) * QK]
        for ib in range(QK // QB):
            aux = np.uint32(0)
            for j in range(4):
                aux |= np.uint32(y[66 + 4 * ib + j]) << np.uint32(8 * j)
            db = d * (F_HALF + np.float32(aux >> np.uint32(28))) * F_HALF
            for k in range(QB // 8):
                s = signs[(aux >> np.uint32(7 * k)) & np.uint32(127)]
                for h in range(2):
                    g = np.int64(y[2 + 8 * ib + 2 * k + h])
                    for j in range(4):
                        v = db * values[g, j]
                        o[ib * QB + 8 * k + 4 * h + j] = -v if (s >> (4 * h + j)) & 1 else v
    return 0


@njit(**JIT)
def decode_s(raw, out, table, values, lo, hi):
    """IQ3_S super-blocks lo .. hi-1 to float32."""
    for b in range(lo, hi):
        y = raw[b * S_BYTES : (b + 1) * S_BYTES]
        d = get_half(y, 0, table)
        o = out[b * QK : (b + 1) * QK]
        for ib in range(QK // QB):
            ls = (np.int64(y[106 + ib // 2]) >> (4 * (ib % 2))) & 15
            db = d * np.float32(1 + 2 * ls)
            for k in range(QB // 4):
                g = np.int64(y[2 + 8 * ib + k]) | (((np.int64(y[66 + ib]) >> k) & 1) << 8)
                s = y[74 + 4 * ib + k // 2]
                for j in range(4):
                    v = db * values[g, j]
                    o[ib * QB + 4 * k + j] = -v if (s >> (4 * (k % 2) + j)) & 1 else v
    return 0
