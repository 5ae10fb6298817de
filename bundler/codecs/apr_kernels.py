"""The compiled loops of aprender's AprQ4 and AprQ8 (their layouts and rounding rules are
described in `apr_native`), each over a range of blocks or values, for `split_run`."""

from __future__ import annotations

import numpy as np
from numba import njit

from bundler.codecs.halfs import f32_from_bits, get_half, put_half
from bundler.codecs.intops import max_magnitude_bits, uindex

_INF_BITS = np.uint32(0x7F800000)
_F0 = np.float32(0.0)
_F1 = np.float32(1.0)
_HALF = np.float32(0.5)
_INF = np.float32(np.inf)
#: Q4 codes -8..7 (stored plus 8), Q8 codes -127..127.
_Q4_LO, _Q4_HI, _Q4_MAX = np.float32(-8.0), np.float32(7.0), np.float32(7.0)
_Q8_LO, _Q8_HI = np.float32(-127.0), np.float32(127.0)
#: Smallest normal half; aprender decodes a scale below it (a subnormal) as 0.
_F16_MIN_NORMAL = np.float32(2.0**-14)


@njit(cache=True, nogil=True, inline="always")
def _code(v, lo, hi):
    """Rust's `v.round().clamp(lo, hi) as i8` of a float32 quotient: halves rounded away
    from zero, NaN (0 / 0 under a scale that underflowed to 0) to 0. Clamped first (to
    integers, so the order does not matter), then rounded exactly in float32: the fraction
    of a value under 2^23 is exact."""
    c = min(max(v, lo), hi)
    t = np.int32(c)
    frac = c - np.float32(t)
    q = t + np.int32(frac >= _HALF) - np.int32(frac <= -_HALF)
    return q if v == v else np.int32(0)


# NumPy's error model: x / 0.0 is an infinity or NaN, as in Rust, not an exception
@njit(cache=True, nogil=True, error_model="numpy")
def encode_q4(x, out, qk, size, lo, hi):  # pragma: no cover - compiled
    """AprQ4 blocks lo .. hi-1 of the float32 values `x` (`qk` each, a run-time value so
    that the block loops are vectorized rather than unrolled) into `out` (`size` bytes
    each); returns how many held a NaN or an infinity."""
    bits = x.view(np.uint32)
    bad = 0
    for b in range(lo, hi):
        x0 = b * qk
        o0 = b * size
        top = max_magnitude_bits(bits, x0, qk)
        bad += top >= _INF_BITS
        scale = _F1 if top == 0 else f32_from_bits(top) / _Q4_MAX
        put_half(out, o0, scale)
        for j in range(qk // 2):
            q0 = _code(x[uindex(x0 + 2 * j)] / scale, _Q4_LO, _Q4_HI) + np.int32(8)
            q1 = _code(x[uindex(x0 + 2 * j + 1)] / scale, _Q4_LO, _Q4_HI) + np.int32(8)
            out[uindex(o0 + 2 + j)] = np.uint8(q0 | (q1 << np.int32(4)))
    return bad


@njit(cache=True, nogil=True)
def decode_q4(raw, out, table, qk, size, lo, hi):  # pragma: no cover - compiled
    """Values of AprQ4 blocks lo .. hi-1 of `raw` into `out`; a NaN, infinite or subnormal
    scale counts as 0 (`table`: `HALF_TO_F32`)."""
    for b in range(lo, hi):
        r0 = b * size
        o0 = b * qk
        s = get_half(raw, r0, table)
        a = abs(s)
        s = s if (a >= _F16_MIN_NORMAL) & (a < _INF) else _F0
        for j in range(qk // 2):
            byte = np.int32(raw[uindex(r0 + 2 + j)])
            out[uindex(o0 + 2 * j)] = np.float32((byte & np.int32(0xF)) - np.int32(8)) * s
            out[uindex(o0 + 2 * j + 1)] = np.float32((byte >> np.int32(4)) - np.int32(8)) * s


@njit(cache=True, nogil=True, error_model="numpy")
def encode_q8(x, codes, scale, lo, hi):  # pragma: no cover - compiled
    """AprQ8 codes (int8) of values lo .. hi-1 of `x` under the tensor's float32 scale."""
    for i in range(lo, hi):
        codes[uindex(i)] = np.int8(_code(x[uindex(i)] / scale, _Q8_LO, _Q8_HI))


@njit(cache=True, nogil=True)
def decode_q8(codes, out, scale, lo, hi):  # pragma: no cover - compiled
    """Values of AprQ8 codes (int8) lo .. hi-1 under the tensor's float32 scale."""
    for i in range(lo, hi):
        out[uindex(i)] = np.float32(codes[uindex(i)]) * scale
