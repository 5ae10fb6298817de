"""MXFP4 and NVFP4: 4-bit E2M1 floats sharing a scale, an E8M0 power of two per 32 values
(MXFP4, the OCP microscaling format) or an unsigned E4M3 float per 16 (NVFP4), as ggml
stores them.

Byte layouts (ggml-common.h):

    MXFP4  u8 e | 16 bytes of nibbles                 32 values, 4.25 bits per value
    NVFP4  u8 d[4] | 32 bytes of nibbles              64 values, 4.5 bits per value

A value decodes as `TABLE[code] * 2^(e - 128)`: ggml doubles the E2M1 values (TABLE holds
0, 1, 2, 3, 4, 6, 8, 12 and their negatives) and halves the scale, so e = 0 and 1 are the
subnormal 2^-128 and 2^-127. Byte j holds value j (low nibble) and value j + 16 (high).

The encoder is ggml's `quantize_row_mxfp4_ref` (what `ggml_quantize_chunk` calls; it has no
weighted variant): e = floorf(log2f(max |x|)) - 2 + 127 converted to an 8-bit integer (0
for an all-zero block; below 2^-125 the conversion wraps as x86-64's does), and each value
takes the first code of least |TABLE[code] * scale - x|.

NVFP4 (`quantize_row_nvfp4_ref`, no weighted variant either) does the same per 16-value
sub-block s with the scale byte d[s] = ue4m3(max |x| / 6) (ggml_fp32_to_ue4m3: mantissa
rounded on its first dropped bit, half up; below 2^-6 the subnormal code
(int)(v * 512 + 0.5) capped at 7; from 2^8 the largest code 0x7E) and the value scale
ue4m3_to_fp32(d[s]) / 2 (codes 0 and 0x7F give 0; bit 7 of the byte is ignored). Byte
8s + j holds value 16s + j (low nibble) and value 16s + j + 8 (high).
"""

from __future__ import annotations

import functools

import numpy as np
from numba import njit

from bundler.codecs.facts import BY_NAME
from bundler.codecs.halfs import f32_bits, f32_from_bits
from bundler.codecs.kquants.common import F0, JIT, nonfinite

#: ggml's kvalues_mxfp4 (twice the E2M1 values), as float32.
TABLE = np.array([0, 1, 2, 3, 4, 6, 8, 12, 0, -1, -2, -3, -4, -6, -8, -12], np.float32)
QK = BY_NAME["mxfp4"].block_size
SIZE = BY_NAME["mxfp4"].type_size
NV_QK = BY_NAME["nvfp4"].block_size
NV_SIZE = BY_NAME["nvfp4"].type_size
NV_SUB = 16
NV_SUBS = NV_QK // NV_SUB
SIX = np.float32(6.0)


@njit(**JIT)
def half_scale(e):
    """ggml_e8m0_to_fp32_half: 2^(e - 128) as float32 (subnormal for e < 2)."""
    if e < 2:
        return f32_from_bits(np.uint32(0x00200000) << np.uint32(e))
    return f32_from_bits(np.uint32(e - 1) << np.uint32(23))


@njit(**JIT)
def exponent(amax):
    """The stored exponent of a block whose largest magnitude is amax."""
    if not amax > F0:
        return 0
    # log2f is the C library's (the compiler calls libm), so its rounding near powers of
    # two, which floorf then sees, is the reference's
    v = np.floor(np.log2(amax)) - np.float32(2.0) + np.float32(127.0)
    return np.int32(v) & 0xFF


@njit(**JIT, inline="always")
def nearest_code(x, d):
    """The first code of least |TABLE[code] * d - x| (best_index_mxfp4)."""
    best = 0
    err = abs(TABLE[0] * d - x)
    for i in range(1, 16):
        e = abs(TABLE[i] * d - x)
        better = e < err
        best = i if better else best
        err = e if better else err
    return best


@njit(**JIT)
def ue4m3(x):
    """ggml_fp32_to_ue4m3: the unsigned E4M3 code of float32 x (0 unless x > 0)."""
    if not x > F0:
        return 0
    x = min(x, np.float32(448.0))
    bits = f32_bits(x)
    exp = np.int32((bits >> 23) & 0xFF) - 127 + 7
    if exp <= 0:
        man = np.int32(x * np.float32(512.0) + np.float32(0.5))
        return 0 if man < 1 else min(man, 7)
    if exp >= 15:
        return 0x7E
    man = np.int32((bits >> 20) & 7) + np.int32((bits >> 19) & 1)
    if man > 7:
        man = 0
        exp += 1
        if exp >= 15:
            return 0x7E
    return (exp << 3) | man


@njit(**JIT)
def ue4m3_half(code):
    """ggml_ue4m3_to_fp32: half the value of unsigned E4M3 `code` (exact)."""
    if code == 0 or code == 0x7F:
        return F0
    exp = (code >> 3) & 0xF
    man = np.float32(code & 7)
    if exp == 0:
        return man * np.float32(2.0**-10)
    return (np.float32(1.0) + man / np.float32(8.0)) * f32_from_bits(np.uint32(exp + 119) << 23)


@njit(**JIT)
def _scale_byte(amax, nv):
    """The stored scale of a group whose largest magnitude is amax."""
    return ue4m3(amax / SIX) if nv else exponent(amax)


@njit(**JIT)
def _value_scale(byte, nv):
    """The float32 factor of the doubled E2M1 table for a group's stored scale."""
    return ue4m3_half(byte) if nv else half_scale(byte)


@functools.cache
def _pair(nv: bool) -> tuple:
    """MXFP4's encoder and decoder, or with `nv` NVFP4's: the type is a constant of the
    compiled code, so its group size is known to the compiler."""
    qk, size, group = (NV_QK, NV_SIZE, NV_SUB) if nv else (QK, SIZE, QK)
    groups, half = qk // group, group // 2

    @njit(**JIT)
    def encode(src, dst, qw, n, lo, hi):
        """Blocks lo .. hi-1 of the flattened rows (no weights); returns the count of blocks
        with NaN or infinity."""
        codes = np.empty(group, np.int32)
        bad = 0
        for b in range(lo, hi):
            bad += nonfinite(src[b * qk : (b + 1) * qk])
            y = dst[b * size : (b + 1) * size]
            for g in range(groups):
                x = src[b * qk + g * group : b * qk + (g + 1) * group]
                amax = F0
                for j in range(group):
                    a = abs(x[j])
                    if amax < a:
                        amax = a
                byte = ue4m3(amax / SIX) if nv else exponent(amax)
                y[g] = np.uint8(byte)
                d = ue4m3_half(byte) if nv else half_scale(byte)
                for j in range(group):  # one contiguous pass, so that it vectorizes
                    codes[j] = nearest_code(x[j], d)
                for j in range(half):
                    y[groups + g * half + j] = np.uint8(codes[j] | (codes[j + half] << 4))
        return bad

    @njit(**JIT)
    def decode(raw, out, lo, hi):
        """Blocks lo .. hi-1 to float32."""
        for b in range(lo, hi):
            for g in range(groups):
                byte = raw[b * size + g]
                d = ue4m3_half(byte) if nv else half_scale(byte)
                at, first = b * size + groups + g * half, b * qk + g * group
                for j in range(half):
                    q = raw[at + j]
                    out[first + j] = TABLE[q & 0xF] * d
                    out[first + j + half] = TABLE[q >> 4] * d

    return encode, decode


def encoder(nv: bool):
    """The compiled encoder `(src, dst, qw, n, lo, hi)` of MXFP4 (NVFP4 with `nv`)."""
    return _pair(nv)[0]


def decoder(nv: bool):
    """The compiled decoder `(raw, out, lo, hi)` of MXFP4 (NVFP4 with `nv`)."""
    return _pair(nv)[1]
