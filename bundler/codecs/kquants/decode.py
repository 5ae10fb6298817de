"""The K-quant decoders: one function per type decoding one super-block, run in parallel
over the super-blocks by one compiled kernel per type."""

from __future__ import annotations

import numpy as np
from numba import njit

from bundler.codecs.facts import BY_NAME
from bundler.codecs.halfs import f32_from_bits, get_half
from bundler.codecs.intops import uindex
from bundler.codecs.kquants.common import JIT, KINDS, QK, q3_scale, scale_min_k4

#: The block decoders are inlined into each type's kernel (in one process, alternating, Q6_K
#: decoded 3% and Q4_K 15% faster per CPU second than through calls).
INLINE = {**JIT, "inline": "always"}


@njit(**INLINE)
def q2_k_block(y, o, table):
    d = get_half(y, 80, table)
    dmin = get_half(y, 82, table)
    for s in range(16):
        dl = d * np.float32(y[s] & 0xF)
        ml = dmin * np.float32(y[s] >> 4)
        h = s // 8
        shift = 2 * ((s % 8) // 2)
        base = 16 + 32 * h + 16 * (s % 2)
        for i in range(16):
            q = (y[base + i] >> shift) & 3
            o[16 * s + i] = dl * np.float32(q) - ml


@njit(**INLINE)
def q3_k_block(y, o, table):
    d = get_half(y, 108, table)
    sc = y[96:108]
    for s in range(16):
        dl = d * np.float32(q3_scale(sc, s))
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


def _k4_block(qs_at: int, fifth_bit: bool):
    """The block decoder of Q4_K (codes at byte 16) or, with `fifth_bit`, Q5_K (codes at 48,
    bit 4 of element 32c+i at bit 2c of qh byte i, of element 32c+32+i at bit 2c+1); the
    layout is a constant of the compiled function, so its inner loop has no branch."""

    @njit(**INLINE)
    def block(y, o, table):
        d = get_half(y, 0, table)
        dmin = get_half(y, 2, table)
        sc = y[4:16]
        for c in range(4):
            s1, m1 = scale_min_k4(sc, 2 * c)
            s2, m2 = scale_min_k4(sc, 2 * c + 1)
            d1 = d * np.float32(s1)
            n1 = dmin * np.float32(m1)
            d2 = d * np.float32(s2)
            n2 = dmin * np.float32(m2)
            for i in range(32):
                q = y[qs_at + 32 * c + i]
                lo = q & 0xF
                hi = q >> 4
                if fifth_bit:
                    h = y[16 + i] >> (2 * c)
                    lo |= (h & 1) << 4
                    hi |= (h & 2) << 3
                o[64 * c + i] = d1 * np.float32(lo) - n1
                o[64 * c + 32 + i] = d2 * np.float32(hi) - n2

    return block


q4_k_block = _k4_block(16, False)
q5_k_block = _k4_block(48, True)


@njit(**INLINE)
def q6_k_block(y, o, table):
    d = get_half(y, 208, table)
    for h in range(2):
        for g in range(2):  # 16 values under each scale: the inner loop has no index division
            s = 192 + 8 * h + g
            d1 = d * np.float32(np.int8(y[s]))
            d2 = d * np.float32(np.int8(y[s + 2]))
            d3 = d * np.float32(np.int8(y[s + 4]))
            d4 = d * np.float32(np.int8(y[s + 6]))
            for k in range(16):
                i = 16 * g + k
                lo = y[64 * h + i]
                hi = y[64 * h + 32 + i]
                qh = y[128 + 32 * h + i]
                q1 = np.int32((lo & 0xF) | ((qh & 3) << 4)) - 32
                q2 = np.int32((hi & 0xF) | (((qh >> 2) & 3) << 4)) - 32
                q3 = np.int32((lo >> 4) | (((qh >> 4) & 3) << 4)) - 32
                q4 = np.int32((hi >> 4) | (((qh >> 6) & 3) << 4)) - 32
                e = 128 * h + i
                o[e] = d1 * np.float32(q1)
                o[e + 32] = d2 * np.float32(q2)
                o[e + 64] = d3 * np.float32(q3)
                o[e + 96] = d4 * np.float32(q4)


@njit(**INLINE)
def q8_k_block(y, o, table):
    bits = np.uint32(y[0]) | (np.uint32(y[1]) << 8) | (np.uint32(y[2]) << 16)
    d = f32_from_bits(np.uint32(bits | (np.uint32(y[3]) << 24)))
    for i in range(QK):
        o[i] = d * np.float32(np.int8(y[4 + i]))


def super_block_decoder(name: str):
    """The compiled decoder `(raw, out, table, lo, hi)` of K-quant `name`: super-blocks
    lo .. hi-1 to float32."""
    kind = KINDS[name]
    size = BY_NAME[name].type_size

    @njit(**JIT)
    def decode(raw, out, table, lo, hi):
        for b in range(uindex(lo), uindex(hi)):  # unsigned: the slices need no wraparound
            y = raw[b * size : (b + 1) * size]
            o = out[b * QK : (b + 1) * QK]
            if kind == 2:
                q2_k_block(y, o, table)
            elif kind == 3:
                q3_k_block(y, o, table)
            elif kind == 4:
                q4_k_block(y, o, table)
            elif kind == 5:
                q5_k_block(y, o, table)
            elif kind == 6:
                q6_k_block(y, o, table)
            else:
                q8_k_block(y, o, table)

    return decode
