"""The ternary codecs TQ1_0 and TQ2_0 (BitNet b1.58 / TriLM weights): 256 values in -1, 0,
+1 times one half scale d = max |x|.

Byte layouts (ggml-common.h), one block of 256 values:

    TQ1_0  u8 qs[48] | u8 qh[4] | half d    (1.6875 bits per value)
    TQ2_0  u8 qs[64] | half d               (2.0625 bits per value)

A value's trit is t = lroundf(x / d) + 1 in 0..2 (halves away from zero; the inverse taken
from the float32 d, not the half). TQ2_0 stores trit t of value 128h + 32n + m at bits 2n of
byte 32h + m. TQ1_0 packs five trits per byte as a fixed-point fraction: the base-3 number
t0 t1 t2 t3 t4 (t0 most significant) becomes ceil(number * 256 / 243); byte m of the first
32 holds values m + 32n (n = 0..4), byte 32 + m of the next 16 values 160 + m + 16n, and
qh[j] four trits of values 240 + j + 4n shifted up one trit. Decoding trit n of a byte b is
((b * 3^n mod 256) * 3) >> 8.
"""

from __future__ import annotations

import numpy as np
from numba import njit

from bundler.codecs.facts import BY_NAME
from bundler.codecs.halfs import put_half
from bundler.codecs.kquants.common import F0, F1, JIT

QK = BY_NAME["tq1_0"].block_size
HALF = np.float32(0.5)
INF = np.float32(np.inf)
POW3 = np.array([1, 3, 9, 27, 81, 243], np.int32)


@njit(**JIT)
def trit(v):
    """lroundf(v) + 1 for v = x / max|x| (so |v| <= 1). An infinite v (a block whose
    1 / max|x| overflows) gives 1, as the reference's int of lroundf's out-of-range
    result does on x86-64."""
    if v >= HALF and v != INF:
        return 2
    if v <= -HALF and v != -INF:
        return 0
    return 1


@njit(**JIT)
def _scale(x, y, at):
    """Store half d = max |x| at y[at]; return 1 / d (0 for an all-zero block)."""
    amax = F0
    for j in range(QK):
        a = abs(x[j])
        amax = amax if amax > a else a
    put_half(y, at, amax)
    return F1 / amax if amax != F0 else F0


@njit(**JIT)
def _pack5(x, inv, first, stride, count, y, at):
    """Bytes y[at + m], m < count, each the five trits of x[first + m + stride * n]."""
    for m in range(count):
        q = 0
        for n in range(5):
            q = q * 3 + trit(x[first + m + stride * n] * inv)
        y[at + m] = np.uint8((q * 256 + 242) // 243)


@njit(**JIT)
def encode_tq1(x, y):
    """One TQ1_0 block (the reference ignores importance weights)."""
    inv = _scale(x, y, 52)
    _pack5(x, inv, 0, 32, 32, y, 0)
    _pack5(x, inv, 160, 16, 16, y, 32)
    for j in range(4):
        q = 0
        for m in range(4):
            q = q * 3 + trit(x[240 + j + 4 * m] * inv)
        y[48 + j] = np.uint8((q * 3 * 256 + 242) // 243)


@njit(**JIT)
def encode_tq2(x, y):
    """One TQ2_0 block."""
    inv = _scale(x, y, 64)
    for h in range(2):
        for m in range(32):
            q = 0
            for k in range(4):
                q |= trit(x[128 * h + m + 32 * k] * inv) << (2 * k)
            y[32 * h + m] = np.uint8(q)


@njit(cache=True, nogil=True, inline="always")
def _trit_of(q):
    """The leading trit of five-trit byte `q` (shifted to its top by a power of 3), as a
    float32 -1, 0 or 1 (in 32-bit lanes: the compiler widens integer arithmetic to 64)."""
    return np.float32(np.uint32((np.uint32(q) * np.uint32(3)) >> np.uint32(8))) - F1


@njit(cache=True, nogil=True, inline="always")
def _unpack5(y, at, count, d, out, o):
    """Values of the five-trit bytes y[at .. at+count), trit n of byte m at out[o + count n + m]."""
    src = y[at : at + count]
    for k in range(5):
        dst = out[o + count * k : o + count * (k + 1)]
        p = np.uint8(POW3[k])
        for m in range(count):
            dst[m] = _trit_of(np.uint8(src[m] * p)) * d


@njit(cache=True, nogil=True, inline="always")
def decode_tq1(y, d, o, w):
    """One TQ1_0 block of scale d to float32; `w` is the first group's byte count (32, a
    run-time value so that the compiler vectorises the loops over it instead of unrolling
    them)."""
    _unpack5(y, 0, w, d, o, 0)
    _unpack5(y, w, w // 2, d, o, 5 * w)
    qh = y[w + w // 2 : w + w // 2 + 4]
    for k in range(4):
        for j in range(4):
            q = np.uint8(qh[j] * np.uint8(POW3[k]))
            o[15 * w // 2 + 4 * k + j] = _trit_of(q) * d


@njit(cache=True, nogil=True, inline="always")
def decode_tq2(y, d, o, w):
    """One TQ2_0 block of scale d to float32 (`w` = 32 bytes a group, as in decode_tq1)."""
    for h in range(2):
        src = y[w * h : w * (h + 1)]
        for k in range(4):
            dst = o[4 * w * h + w * k : 4 * w * h + w * (k + 1)]
            for m in range(w):
                dst[m] = (np.float32(np.uint32((src[m] >> np.uint8(2 * k)) & np.uint8(3))) - F1) * d
