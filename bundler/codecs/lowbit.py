"""Q1_0 and Q2_0: one half scale per block and a sign bit (Q1_0) or a 2-bit code (Q2_0)
per value, llama.cpp's plainest low-bit types.

Byte layouts (ggml-common.h):

    Q1_0  half d | u8 qs[16]    128 values, 1.125 bits per value
    Q2_0  half d | u8 qs[16]     64 values, 2.25 bits per value

Q1_0 (ggml's `quantize_row_q1_0_ref`): d = (sum of |x| in index order, float32) / 128, and
bit j % 8 of byte j / 8 is set when x[j] >= 0 (so -0.0 sets it). A value decodes to d or -d.

Q2_0 (`quantize_row_q2_0_ref`): d = max |x|; code q = (int) roundf(x * (1 / d)) + 1 clamped
to 0..3 (the inverse from the float32 d, not the half; halves away from zero), at bits
2 (j % 4) of byte j / 4. A value decodes to (q - 1) * d, so code 3 (+2d) decodes but the
encoder never makes it. In a block whose 1 / d overflows (d below about 2^-128) every
product is infinite or NaN, which x86-64's conversion to int makes INT_MIN, so every code
is 0. Neither encoder uses importance weights (ggml's `quantize_q1_0` / `quantize_q2_0`
ignore them). Their block loop is halfscaled.py's.
"""

from __future__ import annotations

import numpy as np
from numba import njit

from bundler.codecs.halfs import put_half
from bundler.codecs.kquants.common import F0, F1, JIT

HALF = np.float32(0.5)
#: Above this magnitude a float32 is not a finite int32 after rounding (x86-64 gives INT_MIN).
INT_LIMIT = np.float32(2147483648.0)


@njit(**JIT)
def code_q2(v):
    """(int) roundf(v) + 1 clamped to 0..3, with x86-64's INT_MIN for a NaN or a value out
    of int range."""
    if not abs(v) < INT_LIMIT:
        return 0
    t = np.trunc(v)
    if abs(v - t) >= HALF:
        t += F1 if v > F0 else -F1
    return min(max(np.int64(t) + 1, 0), 3)


@njit(**JIT)
def encode_q1(x, y):
    """One Q1_0 block: the mean magnitude, then a bit per value set when it is >= 0."""
    total = F0
    for j in range(x.size):
        total += abs(x[j])
    put_half(y, 0, total / np.float32(x.size))
    for k in range(x.size // 8):
        byte = 0
        for i in range(8):
            if x[8 * k + i] >= F0:
                byte |= 1 << i
        y[2 + k] = np.uint8(byte)


@njit(**JIT)
def encode_q2(x, y):
    """One Q2_0 block: the largest magnitude, then a 2-bit code per value."""
    amax = F0
    for j in range(x.size):
        a = abs(x[j])
        if a > amax:
            amax = a
    put_half(y, 0, amax)
    inv = F1 / amax if amax > F0 else F0
    for k in range(x.size // 4):
        byte = 0
        for i in range(4):
            byte |= code_q2(x[4 * k + i] * inv) << (2 * i)
        y[2 + k] = np.uint8(byte)


@njit(**JIT)
def decode_q1(y, d, o):
    """One Q1_0 block of scale d to float32: d or -d."""
    for j in range(o.size):
        o[j] = d if (y[2 + j // 8] >> (j % 8)) & 1 else -d


@njit(**JIT)
def decode_q2(y, d, o):
    """One Q2_0 block of scale d to float32: (q - 1) * d."""
    for j in range(o.size):
        q = (y[2 + j // 4] >> (2 * (j % 4))) & 3
        o[j] = np.float32(np.int32(q) - 1) * d
