"""MXFP4: 32 values as 4-bit E2M1 floats sharing one E8M0 power-of-two scale (the OCP
microscaling format, as ggml stores it).

Byte layout (ggml-common.h), one block of 32 values:

    MXFP4  u8 e | 16 bytes of nibbles      (4.25 bits per value)

A value decodes as `TABLE[code] * 2^(e - 128)`: ggml doubles the E2M1 values (TABLE holds
0, 1, 2, 3, 4, 6, 8, 12 and their negatives) and halves the scale, so e = 0 and 1 are the
subnormal 2^-128 and 2^-127. Byte j holds value j (low nibble) and value j + 16 (high).

The encoder is ggml's `quantize_row_mxfp4_ref` (what `ggml_quantize_chunk` calls; it has no
weighted variant): e = floorf(log2f(max |x|)) - 2 + 127 converted to an 8-bit integer (0
for an all-zero block; below 2^-125 the conversion wraps as x86-64's does), and each value
takes the first code of least |TABLE[code] * scale - x|.
"""

from __future__ import annotations

import numpy as np
from numba import njit

from bundler.codecs.facts import BY_NAME
from bundler.codecs.halfs import f32_from_bits
from bundler.codecs.kernels import Kernel, range_kernel
from bundler.codecs.kquants.common import F0, JIT, nonfinite

#: ggml's kvalues_mxfp4 (twice the E2M1 values), as float32.
TABLE = np.array([0, 1, 2, 3, 4, 6, 8, 12, 0, -1, -2, -3, -4, -6, -8, -12], np.float32)
QK = BY_NAME["mxfp4"].block_size
SIZE = BY_NAME["mxfp4"].type_size


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
def encode(src, dst, qw, n, lo, hi):
    """MXFP4 blocks lo .. hi-1 of the flattened rows (no weights); returns the count of
    blocks with NaN or infinity."""
    bad = 0
    codes = np.empty(QK, np.int32)
    for b in range(lo, hi):
        x = src[b * QK : (b + 1) * QK]
        y = dst[b * SIZE : (b + 1) * SIZE]
        bad += nonfinite(x)
        amax = F0
        for j in range(QK):
            a = abs(x[j])
            if amax < a:
                amax = a
        e = exponent(amax)
        y[0] = np.uint8(e)
        d = half_scale(e)
        for j in range(QK):
            codes[j] = nearest_code(x[j], d)
        for j in range(QK // 2):
            y[1 + j] = np.uint8(codes[j] | (codes[j + QK // 2] << 4))
    return bad


@njit(**JIT)
def decode(raw, out, lo, hi):
    """MXFP4 blocks lo .. hi-1 to float32."""
    for b in range(lo, hi):
        y = raw[b * SIZE : (b + 1) * SIZE]
        o = out[b * QK : (b + 1) * QK]
        d = half_scale(y[0])
        for j in range(QK // 2):
            o[j] = TABLE[y[1 + j] & 0xF] * d
            o[j + QK // 2] = TABLE[y[1 + j] >> 4] * d


KERNELS: dict[str, Kernel] = {"mxfp4": range_kernel(encode, decode, QK, SIZE)}
