"""Constants and scalar helpers shared by the K-quant kernels."""

from __future__ import annotations

import numpy as np
from numba import njit

from bundler.codecs.facts import BY_NAME
from bundler.codecs.halfs import f32_bits
from bundler.codecs.intops import max_magnitude_bits

#: Values per super-block.
QK = BY_NAME["q4_k"].block_size
#: Which K-quant a compiled kernel is built for: a constant of the kernel (a closure
#: variable), so that the other types' branches are pruned before compilation.
KINDS = {"q2_k": 2, "q3_k": 3, "q4_k": 4, "q5_k": 5, "q6_k": 6, "q8_k": 8}
#: Sub-blocks searched side by side (a multiple of 16 and of 8, wide enough to vectorise).
LANES = 32

F0 = np.float32(0.0)
F1 = np.float32(1.0)
ROUND_MAGIC = np.float32(12582912.0)  # 1.5 * 2^23
TENTH = np.float32(0.1)
EPS = np.float32(1e-15)  # ggml's GROUP_MAX_EPS
F15 = np.float32(15.0)
F32 = np.float32(32.0)
F63 = np.float32(63.0)
F127 = np.float32(127.0)
F128 = np.float32(128.0)
#: The grids of the weighted scale-and-min search (Q2_K, Q4_K, Q5_K, Q4_1, Q5_1 with
#: importance weights): (nmax - 0.9 + 0.05 s) / (max - min) for s = 0..36.
RMIN_W = np.float32(-0.9)
DELTA_W = np.float32(0.05)

JIT = {"cache": True, "nogil": True, "error_model": "numpy"}


@njit(**JIT)
def nearest(f):
    """ggml's nearest_int: round half to even through the mantissa of f + 1.5*2^23."""
    v = np.float32(f + ROUND_MAGIC)
    return np.int32(f32_bits(v) & np.uint32(0x7FFFFF)) - np.int32(0x400000)


@njit(**JIT)
def max_abs_bits(x):
    """The largest bit pattern of |x| (an integer reduction, so it vectorises); a pattern
    from 0x7F800000 up means the block holds an infinity or a NaN."""
    return max_magnitude_bits(x.view(np.uint32), 0, x.size)


@njit(**JIT)
def nonfinite(x):
    return 1 if max_abs_bits(x) >= np.uint32(0x7F800000) else 0


@njit(**JIT)
def nonfinite_blocks(src, lo, hi, size):
    """How many of the blocks lo .. hi-1 of `size` values hold a NaN or an infinity."""
    bad = 0
    for b in range(lo, hi):
        bad += nonfinite(src[b * size : (b + 1) * size])
    return bad


@njit(**JIT)
def scale_min_k4(sc, j):
    """Sub-block j's 6-bit scale and min from the 12 packed bytes of Q4_K/Q5_K."""
    if j < 4:
        return np.int32(sc[j] & 63), np.int32(sc[j + 4] & 63)
    s = np.int32(sc[j + 4] & 0xF) | (np.int32(sc[j - 4] >> 6) << 4)
    m = np.int32(sc[j + 4] >> 4) | (np.int32(sc[j] >> 6) << 4)
    return s, m


@njit(**JIT)
def q3_scale(sc, j):
    """Sub-block j's signed 6-bit scale from the 12 packed bytes of Q3_K."""
    low = np.int32(sc[j] & 0xF) if j < 8 else np.int32(sc[j - 8] >> 4)
    high = (np.int32(sc[8 + j % 4]) >> (2 * (j // 4))) & 3
    return (low | (high << 4)) - 32
