"""IQ4_NL and IQ4_XS: 4-bit codes into ggml's non-linear table `kvalues_iq4nl`.

Byte layouts (ggml-common.h):

    IQ4_NL  (32 values)   half d | 16 bytes of nibbles
    IQ4_XS  (256 values)  half d | u16 scales_h | u8 scales_l[4] | 128 bytes of nibbles

A value decodes as `scale * TABLE[code]`; IQ4_NL's scale is d, IQ4_XS's is
`d * (ls - 32)` with the 6-bit sub-block scale ls of each 32 values (low nibble in
scales_l, sub-block 2k in the low half of byte k; high two bits at bits 2i of scales_h).
Within every 32 values, byte j holds value j (low nibble) and value j + 16 (high).

The encoders are ggml's `quantize_iq4_nl` / `quantize_iq4_xs` (what `ggml_quantize_chunk`
and llama-quantize call, with or without an importance matrix): per 32 values, weights
x^2 (or importance * sqrt(sigma2 + x^2), sigma2 = twice the mean square of the block or
super-block), a first scale max / 127, then the weighted least-squares scale of that and of
the 15 trial scales (itry - 127) / max, itry in -7..7, keeping a trial only when it is
strictly better. IQ4_XS then quantizes the eight scales to 6 signed bits against
-max_scale / 32 with `nearest`, and recomputes the codes from the rounded scales. All
arithmetic is float32 in the reference's order, without fused multiply-add.
"""

from __future__ import annotations

import numpy as np
from numba import njit

from bundler.codecs.facts import BY_NAME
from bundler.codecs.halfs import get_half, put_half
from bundler.codecs.kquants.common import EPS, F0, F1, JIT, nearest, nonfinite

#: ggml's kvalues_iq4nl, as the float32 values its arithmetic promotes them to.
TABLE = np.array(
    [-127, -104, -83, -65, -49, -35, -22, -10, 1, 13, 25, 38, 53, 69, 89, 113], np.float32
)
#: Values per sub-block (each with its own scale).
QB = 32
#: Values per super-block of IQ4_XS, and its bytes.
QK = BY_NAME["iq4_xs"].block_size
XS_BYTES = BY_NAME["iq4_xs"].type_size
NL_BYTES = BY_NAME["iq4_nl"].type_size
#: Trial scales on each side of the first one.
NTRY = 7
F32 = np.float32(32.0)


@njit(**JIT, inline="always")
def best_index(al):
    """ggml's best_index_int8 over TABLE: the index of the nearest value, the lower one on a
    tie (and 15 for NaN, where the reference's bisection ends), with that value. Written
    with selects, not a bisection, so that a loop over values vectorises."""
    v = TABLE
    c = 0
    lo = v[0]
    for k in range(1, 16):
        above = not (al < v[k])
        c += 1 if above else 0
        lo = v[k] if above else lo
    hi = v[15]
    for k in range(14, 0, -1):
        hi = v[k] if al < v[k] else hi
    # now v[c] = lo <= al < hi = v[c + 1], unless al <= v[0] or c == 15
    up = c < 15 and not (al <= v[0]) and not (al - lo < hi - al)
    return (c + 1, hi) if up else (c, lo)


@njit(**JIT)
def weights(x, qw, weighted, sigma2, w):
    """The weights of one sub-block: x^2, or importance * sqrt(sigma2 + x^2)."""
    for j in range(QB):
        if weighted:
            w[j] = qw[j] * np.sqrt(sigma2 + x[j] * x[j])
        else:
            w[j] = x[j] * x[j]


@njit(**JIT)
def sigma2(x):
    """Twice the mean square of a (super-)block, summed in order."""
    s = F0
    for j in range(x.size):
        s += x[j] * x[j]
    return s * (np.float32(2.0) / np.float32(x.size))


@njit(**JIT)
def _sums(x, w, inv, q):
    """The weighted sums of x*q and q*q for the values nearest to inv * x."""
    for j in range(QB):
        q[j] = best_index(inv * x[j])[1]
    sumqx = F0
    sumq2 = F0
    for j in range(QB):
        t = w[j] * q[j]
        sumqx += t * x[j]
        sumq2 += t * q[j]
    return sumqx, sumq2


@njit(**JIT)
def scale(x, w, q):
    """The sub-block scale of the reference's search (0 for a block of |x| < 1e-15)."""
    amax = F0
    mx = F0
    for j in range(QB):
        ax = abs(x[j])
        if ax > amax:
            amax = ax
            mx = x[j]
    if amax < EPS:
        return F0
    v = TABLE
    d = -mx / v[0]
    sumqx, sumq2 = _sums(x, w, F1 / d, q)
    d = sumqx / sumq2 if sumq2 > F0 else F0
    best = d * sumqx
    for itry in range(-NTRY, NTRY + 1):
        inv = (np.float32(itry) + v[0]) / mx
        sumqx, sumq2 = _sums(x, w, inv, q)
        if sumq2 > F0 and sumqx * sumqx > best * sumq2:
            d = sumqx / sumq2
            best = d * sumqx
    return d


@njit(**JIT)
def pack(x, inv, out):
    """The codes of 32 values against 1 / scale `inv`, as 16 bytes of nibbles."""
    for j in range(QB // 2):
        lo = best_index(inv * x[j])[0]
        hi = best_index(inv * x[j + QB // 2])[0]
        out[j] = np.uint8(lo | (hi << 4))


@njit(**JIT)
def _inverse(d):
    # the reference tests the scale for truth: a NaN scale has a NaN inverse
    return F1 / d if d != F0 else F0


@njit(**JIT)
def encode_nl(src, dst, qw, n, lo, hi):
    """IQ4_NL blocks lo .. hi-1 of the flattened rows (n values each; `qw` the per-column
    importance, or empty); returns the count of blocks with NaN or infinity."""
    weighted = qw.size > 0
    w = np.empty(QB, np.float32)
    q = np.empty(QB, np.float32)
    bad = 0
    for b in range(lo, hi):
        x = src[b * QB : (b + 1) * QB]
        y = dst[b * NL_BYTES : (b + 1) * NL_BYTES]
        bad += nonfinite(x)
        col = (b * QB) % n
        weights(x, qw[col : col + QB], weighted, sigma2(x) if weighted else F0, w)
        d = scale(x, w, q)
        put_half(y, 0, d)
        pack(x, _inverse(d), y[2:])
    return bad


@njit(**JIT)
def encode_xs(src, dst, qw, n, lo, hi):
    """IQ4_XS super-blocks lo .. hi-1 (as `encode_nl`)."""
    weighted = qw.size > 0
    w = np.empty(QB, np.float32)
    q = np.empty(QB, np.float32)
    scales = np.empty(QK // QB, np.float32)
    bad = 0
    for b in range(lo, hi):
        x = src[b * QK : (b + 1) * QK]
        y = dst[b * XS_BYTES : (b + 1) * XS_BYTES]
        bad += nonfinite(x)
        col = (b * QK) % n
        s2 = sigma2(x) if weighted else F0
        max_scale = F0
        amax_scale = F0
        for ib in range(QK // QB):
            xb = x[ib * QB : (ib + 1) * QB]
            weights(xb, qw[col + ib * QB : col + (ib + 1) * QB], weighted, s2, w)
            s = scale(xb, w, q)
            scales[ib] = s
            if abs(s) > amax_scale:
                amax_scale = abs(s)
                max_scale = s
        d = -max_scale / F32
        put_half(y, 0, d)
        inv = _inverse(d)
        high = 0
        for ib in range(QK // QB):
            ls = max(-32, min(31, nearest(inv * scales[ib])))
            pack(x[ib * QB : (ib + 1) * QB], _inverse(d * np.float32(ls)), y[8 + 16 * ib :])
            ls += 32
            if ib % 2 == 0:
                y[4 + ib // 2] = np.uint8(ls & 0xF)
            else:
                y[4 + ib // 2] |= np.uint8((ls & 0xF) << 4)
            high |= (ls >> 4) << (2 * ib)
        y[2] = np.uint8(high & 0xFF)
        y[3] = np.uint8(high >> 8)
    return bad


@njit(**JIT)
def _unpack(qs, dl, v, out):
    for j in range(QB // 2):
        out[j] = dl * v[qs[j] & 0xF]
        out[j + QB // 2] = dl * v[qs[j] >> 4]


@njit(**JIT)
def decode_nl(raw, out, table, lo, hi):
    """IQ4_NL blocks lo .. hi-1 to float32: d * TABLE[code]."""
    for b in range(lo, hi):
        y = raw[b * NL_BYTES : (b + 1) * NL_BYTES]
        _unpack(y[2:], get_half(y, 0, table), TABLE, out[b * QB : (b + 1) * QB])


@njit(**JIT)
def decode_xs(raw, out, table, lo, hi):
    """IQ4_XS super-blocks lo .. hi-1 to float32: d * (ls - 32) * TABLE[code]."""
    for b in range(lo, hi):
        y = raw[b * XS_BYTES : (b + 1) * XS_BYTES]
        d = get_half(y, 0, table)
        high = np.int32(y[2]) | (np.int32(y[3]) << 8)
        for ib in range(QK // QB):
            ls = np.int32((y[4 + ib // 2] >> (4 * (ib % 2))) & 0xF) | (
                ((high >> (2 * ib)) & 3) << 4
            )
            dl = d * np.float32(ls - 32)
            _unpack(y[8 + 16 * ib :], dl, TABLE, out[b * QK + ib * QB : b * QK + (ib + 1) * QB])
