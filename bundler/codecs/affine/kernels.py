"""Compiled loops of the affine codecs: quantizing, the MSE search's errors, the entropy
(KL) threshold search. Everything else is numpy.

Each kernel called from outside runs over a range of its rows, blocks or tasks (its last
two arguments), for `runs`, which cuts the work and calls them on the threads in effect.
"""

from __future__ import annotations

import numpy as np
from numba import njit

from bundler.codecs.affine.runs import CHUNK, ROWS, SUM_BLOCK
from bundler.codecs.halfs import f32_bits, f32_from_bits, f32_to_f16_bits
from bundler.codecs.intops import smax, smin, uindex


def _noalias(kernel):
    """`kernel` compiled with its array arguments declared not to overlap where one of
    them is written (LLVM's noalias), as numba declares them for the body of a parallel
    loop: without it, a store into one array may change what the next iteration reads
    from another, and the loops over rows and candidates are not vectorized (a third
    slower). Every caller passes distinct arrays for what a kernel writes."""
    kernel._compiler._customize_flags = _with_noalias
    return kernel


def _with_noalias(flags):
    flags.noalias = True
    return flags


@_noalias
@njit(cache=True, nogil=True, error_model="numpy")
def quantize(x, scale, zero, qmin, qmax, div32, out, t0, t1):  # pragma: no cover - compiled
    """x (P, S, Q) float32; scale, zero (Ps, S) float64 with Ps 1 or P; out (P, S, Q) ints;
    tasks t0..t1 of P * S * ceil(Q / CHUNK), CHUNK values of one (p, s) each.

    q = clamp(rint(x / scale) + zero, qmin, qmax), the quotient in float64 (in float32 when
    `div32`; rint rounds half to even)."""
    _, s_n, q_n = x.shape
    per = (q_n + CHUNK - 1) // CHUNK
    shared = scale.shape[0] == 1
    for task in range(t0, t1):
        ps = task // per
        c = task % per
        p = ps // s_n
        s = ps % s_n
        pp = 0 if shared else p
        end = min(q_n, (c + 1) * CHUNK)
        _quantize_row(x[p], s, c * CHUNK, end, scale[pp, s], zero[pp, s], qmin, qmax, div32,
                      out[p])  # fmt: skip


@njit(cache=True, nogil=True, error_model="numpy", inline="always")
def _quantize_row(x, i, j0, j1, scale, zero, qmin, qmax, div32, out):  # pragma: no cover
    """out[i, j0:j1] = clamp(rint(x[i, j0:j1] / scale) + zero, qmin, qmax), the quotient in
    float64 (rint rounds half to even); with `div32`, all in float32 as ONNX QuantizeLinear
    does. (Inlined, so that a short row costs no call; NumPy's error model, in its callers
    too: no zero-division check per value, which would keep the loop from being
    vectorized; no scale is 0. A row index rather than a row: a view made per row of a few
    values costs its reference counting. Unsigned indices: a signed one from an argument
    may be negative, and its wrap-around check per value turns the vectorized loads and
    stores into gathers and scatters.)"""
    r = uindex(i)
    if div32:
        d = np.float32(scale)
        z = np.float32(zero)
        lo32 = np.float32(qmin)
        hi32 = np.float32(qmax)
        for j in range(j0, j1):
            at = uindex(j)
            out[r, at] = min(max(np.rint(x[r, at] / d) + z, lo32), hi32)
        return
    lo = np.float64(qmin)
    hi = np.float64(qmax)
    for j in range(j0, j1):
        at = uindex(j)
        q = np.rint(np.float64(x[r, at]) / scale) + zero
        out[r, at] = min(max(q, lo), hi)


@njit(cache=True, nogil=True)
def _extremes(bits, i):  # pragma: no cover - compiled
    """(min, max, finite) of row i of float32 values given as int32 bit patterns: integer
    min and max of order-preserving keys (negative floats' magnitude bits flipped), which
    vectorize; a NaN or an infinity is a key at or beyond an infinity's."""
    mn = np.int32(0x7FFFFFFF)
    mx = np.int32(-0x80000000)
    for j in range(bits.shape[1]):
        b = bits[i, j]
        k = np.int32(b ^ ((b >> np.int32(31)) & np.int32(0x7FFFFFFF)))
        mn = smin(mn, k)
        mx = smax(mx, k)
    finite = mx < np.int32(0x7F800000) and mn > np.int32(-0x7F800001)
    return _from_key(mn), _from_key(mx), finite


@_noalias
@njit(cache=True, nogil=True)
def extremes(bits, lo, hi, r0, r1):  # pragma: no cover - compiled
    """lo[i], hi[i] = the least and greatest value of row i (r0 <= i < r1) of float32
    values given as their int32 bit patterns (`_extremes`); how many rows held a NaN or
    an infinity."""
    bad = 0
    for i in range(r0, r1):
        a, b, finite = _extremes(bits, i)
        lo[i] = a
        hi[i] = b
        bad += not finite
    return bad


@njit(cache=True, nogil=True, inline="always")
def _from_key(k):
    b = k if k >= 0 else k ^ np.int32(0x7FFFFFFF)
    return f32_from_bits(np.uint32(np.int64(b) & np.int64(0xFFFFFFFF)))


#: Scale storage dtypes the MSE search rounds to (`arithmetic.SCALE_DTYPES` order).
SCALE_F32, SCALE_F16, SCALE_BF16 = 0, 1, 2


@njit(cache=True, nogil=True, inline="always")
def _stored_scale(s, kind, tiny, half_table):
    """`arithmetic.parameters`' stored scale of the float64 scale `s` (already positive and
    finite in float32): float32, then float16 or bfloat16 (round to nearest even), and the
    dtype's smallest subnormal for a scale that rounds to 0."""
    if kind == SCALE_F32:
        return _stored_f32(s, tiny)
    f = np.float32(s)
    if kind == SCALE_F16:
        f = half_table[f32_to_f16_bits(f)]
    elif kind == SCALE_BF16:
        w = f32_bits(f)
        w = (w + np.uint32(0x7FFF) + ((w >> np.uint32(16)) & np.uint32(1))) & np.uint32(0xFFFF0000)
        f = f32_from_bits(w)
    return tiny if f == 0 else np.float64(f)


@njit(cache=True, nogil=True, inline="always")
def _stored_f32(s, tiny):
    """`_stored_scale` of a float32 scale."""
    f = np.float64(np.float32(s))
    return tiny if f == 0.0 else f


@njit(cache=True, nogil=True, inline="always")
def _scale_zero(lo, hi, qmin, qmax, symmetric, extreme, kind, tiny, half_table):
    """(scale, zero point) of the range [lo, hi] exactly as `arithmetic.parameters`
    (`extreme`: its `extreme` scale rule)."""
    d = _stored_scale(_raw_scale(lo, hi, qmin, qmax, symmetric, extreme), kind, tiny, half_table)
    return d, _zero_point(lo, d, qmin, qmax, symmetric)


@njit(cache=True, nogil=True, inline="always")
def _scale_zero_f32(lo, hi, qmin, qmax, symmetric, extreme, tiny):
    """`_scale_zero` of a float32 scale: no table look-up, so a loop of it is vectorized."""
    d = _stored_f32(_raw_scale(lo, hi, qmin, qmax, symmetric, extreme), tiny)
    return d, _zero_point(lo, d, qmin, qmax, symmetric)


@njit(cache=True, nogil=True, inline="always")
def _raw_scale(lo, hi, qmin, qmax, symmetric, extreme):
    """`_scale_zero`'s float64 scale of [lo, hi] before it is stored (never 0)."""
    lo0 = min(lo, 0.0)
    hi0 = max(hi, 0.0)
    if symmetric and extreme:
        s = (lo0 if -lo0 >= hi0 else hi0) / qmin
    elif symmetric:
        s = max(-lo0, hi0) / ((qmax - qmin) / 2)
    else:
        s = (hi0 - lo0) / (qmax - qmin)
    s = abs(lo) if lo == hi else s
    return 1.0 if s == 0.0 else s


@njit(cache=True, nogil=True, inline="always")
def _zero_point(lo, d, qmin, qmax, symmetric):
    """`_scale_zero`'s zero point of a range from `lo` with the stored scale d."""
    if symmetric:
        return 0.0
    return min(max(np.rint(qmin - min(lo, 0.0) / d), np.float64(qmin)), np.float64(qmax))


@njit(cache=True, nogil=True, error_model="numpy")
def _approximate_error(row, scale, zero, qmin, qmax):  # pragma: no cover - compiled
    """The squared error of `row` quantized with (scale, zero), for ranking candidates
    quickly: float32, multiplying by the inverse scale, the sum reassociated (vectorized)
    and the products fused, so a few ulps off (see the shortcuts below); the search
    compares its best candidates with `_exact_error`.
    (rint(v / d) + z clamped to [qmin, qmax], minus z, is rint(v / d) clamped to
    [qmin - z, qmax - z]: small integers are exact in float32.) For a slice of at most
    SUM_BLOCK values (`_long_approximate_error` for longer ones)."""
    d = np.float32(scale)
    z = np.float32(zero)
    # the reciprocal out of the `reassoc` loop, which may turn v * (1 / d) into v / d
    return _approximate_sum(row, d, np.float32(1.0) / d, np.float32(qmin) - z, np.float32(qmax) - z)


@njit(cache=True, nogil=True, error_model="numpy")
def _long_approximate_error(row, scale, zero, qmin, qmax):  # pragma: no cover - compiled
    """`_approximate_error` of a slice of any length: of each block of SUM_BLOCK values,
    their sums added in float64."""
    e = 0.0
    for j0 in range(0, row.shape[0], SUM_BLOCK):
        e += np.float64(_approximate_error(row[j0 : j0 + SUM_BLOCK], scale, zero, qmin, qmax))
    return e


# reassociated (the sum vectorized) and contracted (the decoding product and the square
# fused: fewer operations on the multiplier ports, the loop's bottleneck)
@njit(cache=True, nogil=True, fastmath={"reassoc", "contract"})
def _approximate_sum(row, d, inv, lo, hi):  # pragma: no cover - compiled
    e = np.float32(0.0)
    for j in range(row.shape[0]):
        v = row[j]
        err = v - min(max(np.float32(np.rint(v * inv)), lo), hi) * d
        e += err * err
    return e


@njit(cache=True, nogil=True, error_model="numpy")
def _exact_error(row, scale, zero, qmin, qmax):  # pragma: no cover - compiled
    """The squared error of `row` quantized with (scale, zero) and decoded in float32
    exactly as `quantize` and `dequantize` do, summed in float64 (the sum vectorized).

    The codes are rint(v / scale), computed as rint(v * (1 / scale)) in float32 (16 values
    a vector; the float64 quotient's rint when the reciprocal is out of float32's range):
    a product within a few ulps of the quotient, so their rints differ only next to a
    half-integer; when a value comes that close (and both neighbours are not clamped to
    the same code), the slice is done again with the division."""
    d32 = np.float32(scale)
    lo = np.float64(qmin)
    hi = np.float64(qmax)
    inv32 = np.float32(1.0 / scale)
    if inv32 > _INV_LOW and inv32 < _INV_HIGH:
        z = np.float32(zero)
        e, near = _exact_sum32(row, inv32, np.float32(qmin) - z, np.float32(qmax) - z, d32)
    else:
        e, near = _exact_sum(row, np.float64(1.0) / scale, zero, lo, hi, d32)
    if near:
        return _divided_sum(row, scale, zero, lo, hi, d32)
    return e


#: The float32 reciprocals of scales `_exact_sum32` takes (normal, far from overflow).
_INV_LOW = np.float32(2.0**-100)
_INV_HIGH = np.float32(2.0**100)
#: `_exact_sum32`: how close (relative to the float32 product) to a half-integer the
#: product must stay for its rint to be taken as the quotient's (it is within 2^-23 of
#: it: the reciprocal and the product each rounded once to float32), and the products
#: trusted at all (beyond: an overflow, or a NaN of 0 times an infinite reciprocal).
_NEAR_HALF32 = np.float32(2.0**-22)
_PRODUCT_MAX = np.float32(2.0**100)


@njit(cache=True, nogil=True, fastmath={"reassoc"})
def _exact_sum32(row, inv, lo, hi, d32):  # pragma: no cover - compiled
    # lo, hi: the code range less the zero point; codes clamped to either are the same
    # code whichever side of a half-integer the quotient is, so only interior ones are near
    e = 0.0
    near = 0
    for j in range(row.shape[0]):
        v = row[j]
        t = v * inv
        k = np.rint(t)
        a = abs(t)
        near += ((abs(abs(t - k) - np.float32(0.5)) <= a * _NEAR_HALF32) & (t > lo) & (t < hi)) | (
            ~(a < _PRODUCT_MAX)
        )
        r = np.float64(min(max(k, lo), hi) * d32)
        e += (np.float64(v) - r) * (np.float64(v) - r)
    return e, near > 0


#: How close (relative to the quotient) to a half-integer a product v * (1 / scale) must
#: stay for its rint to be taken as the quotient's (the product is within 3 ulps of it).
_NEAR_HALF = 2.0**-49


@njit(cache=True, nogil=True, fastmath={"reassoc"})
def _exact_sum(row, inv, zero, lo, hi, d32):  # pragma: no cover - compiled
    # a quotient next to m + 1/2 whose codes m and m + 1 (plus zero) are both clamped to
    # lo or both to hi gives the same code either way: only one inside (lo, hi) is near
    e = 0.0
    near = 0
    for j in range(row.shape[0]):
        v = np.float64(row[j])
        t = v * inv
        k = np.rint(t)
        u = t + zero
        near += (abs(abs(t - k) - 0.5) <= abs(t) * _NEAR_HALF) & (u > lo) & (u < hi)
        r = np.float64(np.float32(min(max(k + zero, lo), hi) - zero) * d32)
        e += (v - r) * (v - r)
    return e, near > 0


@njit(cache=True, nogil=True, fastmath={"reassoc"}, error_model="numpy")
def _divided_sum(row, scale, zero, lo, hi, d32):  # pragma: no cover - compiled
    e = 0.0
    for j in range(row.shape[0]):
        v = np.float64(row[j])
        r = np.float64(np.float32(min(max(np.rint(v / scale) + zero, lo), hi) - zero) * d32)
        e += (v - r) * (v - r)
    return e


#: The MSE search's shortcuts, each exact. The float32 approximation of a slice's error is
#: within a relative `slack` s of its exact error: (m + 4) * 2^-24 for the float32 sums and
#: squares of its values in blocks of m (at most SUM_BLOCK), n * 2^-53 for adding the
#: blocks' sums in float64, plus 24 * 2^bits * 2^-24 for a code that differs next to a
#: half-integer; and, its decoding product fused into the subtraction (one rounding
#: fewer), within an additive term of the decoded values' float32 rounding
#: (`runs.shortcuts` derives both margins from these). A candidate whose approximate error
#: exceeds the least one's times the margin, plus the additive term, therefore errs more,
#: exactly, than that one: it cannot win. Of a round's candidates only those within it
#: (the contenders) are compared exactly, and none when one is left. A candidate whose
#: squared errors at the slice's extremes, two of the terms its approximation would sum,
#: exceed the pruning bound is not approximated (_PRUNED): its approximation would be over
#: the margin. The shortcuts trust no error under _SMALLEST (float32 underflow).
#: The approximate error of a candidate not approximated: more than any float32 sum.
_PRUNED = 2.0**1000
_SMALLEST = 2.0**-90


@_noalias
@njit(cache=True, nogil=True, error_model="numpy")
def mse_factors(slices, lo0, hi0, qmin, qmax, symmetric, extreme, coarse, fine, kind, tiny,
                half_table, shortcuts, out, i0, i1):  # pragma: no cover  # fmt: skip
    """out[i] = the factor the MSE search (`_mse_search`) shrinks slice i's range
    [lo0, hi0] by, for slices i0..i1. `shortcuts`: see `runs.shortcuts`."""
    factors, scale, zero, approx, exact = _search_rows(len(coarse), len(fine))
    long = slices.shape[1] > SUM_BLOCK
    for i in range(i0, i1):
        out[i] = _mse_search(slices[i], lo0[i], hi0[i], qmin, qmax, symmetric, extreme, coarse,
                             fine, kind, tiny, half_table, shortcuts, long, factors, scale,
                             zero, approx, exact)  # fmt: skip


@njit(cache=True, nogil=True, inline="always")
def _search_rows(coarse_n, fine_n):
    """The MSE search's working rows for a round's candidates: factors, scales, zero
    points, approximate and exact errors (separate arrays: the loops that fill one while
    reading another are vectorized only when they cannot overlap)."""
    k = max(coarse_n, fine_n + 1)
    return np.empty(k), np.empty(k), np.empty(k), np.empty(k), np.empty(k)


@njit(cache=True, nogil=True, error_model="numpy", inline="always")
def _mse_search(row, lo0, hi0, qmin, qmax, symmetric, extreme, coarse, fine, kind, tiny,
                half_table, shortcuts, long, factors, scale, zero, approx,
                exact):  # pragma: no cover  # fmt: skip
    """The factor the MSE search shrinks the range [lo0, hi0] of `row` by: the `coarse`
    factors, then the best one and the best plus each `fine` step (clipped to 0.01..1). In
    each round every candidate's error is approximated (`_approximate_error`) and the
    contenders' computed exactly (`_exact_error`); the first of least error wins (see the
    shortcuts above and `runs.shortcuts`). factors .. exact: the working rows
    (`_search_rows`); `long`: the row is longer than SUM_BLOCK."""
    exactly = _extreme_magnitude(lo0, hi0)
    won = 1.0
    won_exact = won_approx = np.nan
    widest = 0.0
    for round_ in range(2):
        k_n = _candidates(round_, coarse, fine, won, lo0, hi0, qmin, qmax, symmetric, extreme,
                          kind, tiny, half_table, factors, scale, zero)  # fmt: skip
        if round_ == 0:
            widest = scale[0] * scale[0]  # factor 1: no candidate's scale is larger
        # the fine round's candidates, next to the best one, clip about as much
        _approximate_round(row, k_n, scale, zero, qmin, qmax, lo0, hi0, round_ == 0,
                           shortcuts[1], shortcuts[3] * widest, won_approx, exactly, long,
                           approx)  # fmt: skip
        best = _contest(approx, scale, zero, k_n, shortcuts[0], shortcuts[2] * widest, won_exact,
                        exactly, exact)  # fmt: skip
        if best < 0:
            for k in range(k_n):
                if np.isnan(exact[k]):
                    exact[k] = _exact_error(row, scale[k], zero[k], qmin, qmax)
            best = _winner(exact, k_n)
        won, won_exact, won_approx = factors[best], exact[best], approx[best]
    return won


# The MSE search of few slices (a tensor, a few channels), each slice's candidates and
# contenders spread over the threads: five steps per round, each over a range of slices or
# of (slice, candidate) pairs, run one after the other by `runs.mse_factors`. cand[i]:
# factors, scales, zero points, approximate and exact errors of slice i's candidates.


@njit(cache=True, nogil=True)
def few_candidates(round_, coarse, fine, lo0, hi0, qmin, qmax, symmetric, extreme, kind, tiny,
                   half_table, out, cand, i0, i1):  # pragma: no cover  # fmt: skip
    """`_candidates` of slices i0..i1."""
    for i in range(i0, i1):
        c = cand[i]
        _candidates(round_, coarse, fine, out[i], lo0[i], hi0[i], qmin, qmax, symmetric,
                    extreme, kind, tiny, half_table, c[0], c[1], c[2])  # fmt: skip


@_noalias
@njit(cache=True, nogil=True, error_model="numpy")
def few_errors(slices, lo0, hi0, qmin, qmax, cand, k_n, t0, t1):  # pragma: no cover
    """The approximate error (exact for a slice of `_extreme_magnitude`) of candidates
    t0..t1 of (slice, candidate) pairs."""
    for t in range(t0, t1):
        i, k = t // k_n, t % k_n
        if _extreme_magnitude(lo0[i], hi0[i]):
            cand[i, 3, k] = _exact_error(slices[i], cand[i, 1, k], cand[i, 2, k], qmin, qmax)
        else:
            cand[i, 3, k] = _long_approximate_error(slices[i], cand[i, 1, k], cand[i, 2, k],
                                                    qmin, qmax)  # fmt: skip


@njit(cache=True, nogil=True)
def few_contests(lo0, hi0, cand, k_n, round_, won, widest, shortcuts, best, i0,
                 i1):  # pragma: no cover  # fmt: skip
    """`_contest` of slices i0..i1 (won: the exact errors of their round-0 winners;
    widest: their round-0 candidate 0's squared scale, set in round 0)."""
    for i in range(i0, i1):
        exactly = _extreme_magnitude(lo0[i], hi0[i])
        known = won[i] if round_ == 1 else np.nan
        if round_ == 0:
            widest[i] = cand[i, 1, 0] * cand[i, 1, 0]
        best[i] = _contest(cand[i, 3], cand[i, 1], cand[i, 2], k_n, shortcuts[0],
                           shortcuts[2] * widest[i], known, exactly, cand[i, 4])  # fmt: skip


@_noalias
@njit(cache=True, nogil=True, error_model="numpy")
def few_exact(slices, cand, k_n, best, qmin, qmax, t0, t1):  # pragma: no cover - compiled
    """The exact errors wanted of (slice, candidate) pairs t0..t1."""
    for t in range(t0, t1):
        i, k = t // k_n, t % k_n
        if best[i] < 0 and np.isnan(cand[i, 4, k]):
            cand[i, 4, k] = _exact_error(slices[i], cand[i, 1, k], cand[i, 2, k], qmin, qmax)


@njit(cache=True, nogil=True)
def few_winners(cand, k_n, best, out, won, i0, i1):  # pragma: no cover - compiled
    """The winning factor (out) and its exact error (won) of slices i0..i1."""
    for i in range(i0, i1):
        k = best[i] if best[i] >= 0 else _winner(cand[i, 4], k_n)
        out[i] = cand[i, 0, k]
        won[i] = cand[i, 4, k]


@njit(cache=True, nogil=True, inline="always")
def _candidates(round_, coarse, fine, won, lo0, hi0, qmin, qmax, symmetric, extreme, kind,
                tiny, half_table, factors, scale, zero):  # fmt: skip
    """The factors, scales and zero points of a round's candidates (round 1: around
    `won`); how many."""
    k_n = len(coarse) if round_ == 0 else len(fine) + 1
    if round_ == 0:
        for k in range(k_n):  # a slice assignment is numba's slow general path
            factors[k] = coarse[k]
    else:
        factors[0] = won
        for k in range(1, k_n):
            factors[k] = min(max(won + fine[k - 1], 0.01), 1.0)
    if kind == SCALE_F32:
        # float32 scales: no table look-up, so this loop is vectorized
        for k in range(k_n):
            scale[k], zero[k] = _scale_zero_f32(lo0 * factors[k], hi0 * factors[k], qmin, qmax,
                                                symmetric, extreme, tiny)  # fmt: skip
    else:
        for k in range(k_n):
            scale[k], zero[k] = _scale_zero(lo0 * factors[k], hi0 * factors[k], qmin, qmax,
                                            symmetric, extreme, kind, tiny, half_table)  # fmt: skip
    return k_n


@njit(cache=True, nogil=True, inline="always")
def _extreme_magnitude(lo0, hi0):
    """Whether the larger magnitude of a slice's range [lo0, hi0] is outside 2^-24..2^24,
    where the float32 squares of its errors may underflow (a subnormal scale's reciprocal
    may overflow) or their sums overflow: such a slice's candidates are ranked by their
    exact errors (slower; real weights are never there)."""
    m = max(abs(lo0), abs(hi0))
    return m > 0.0 and (m < 2.0**-24 or m > 2.0**24)


@njit(cache=True, nogil=True, error_model="numpy")
def _approximate_round(row, k_n, scale, zero, qmin, qmax, lo0, hi0, ends, bound, extra,
                       known_error, exactly, long, approx):  # pragma: no cover  # fmt: skip
    """approx[:k_n] of one slice's candidates (their exact errors when `exactly`; `long`: a
    slice longer than SUM_BLOCK):
    candidate 0's is `known_error` unless NaN; a candidate with the scale and zero point
    of candidate 0 or of the one before it has that one's. With `ends`, one whose squared
    errors at the slice's extremes lo0 and hi0 (`_ends`) alone exceed the least error of
    the candidates before the one before it times `bound`, plus `extra`, is _PRUNED, not
    approximated, and so is every later one when `_span_deficit` shows that theirs exceed
    it too. (The least error but the last one's: whether a candidate is approximated does
    not wait for the approximation before it, which the processor then runs ahead of the
    decision. Any earlier least is a valid limit, only a larger one.)"""
    least = np.inf
    lagged = np.inf
    for k in range(k_n):
        limit = max(lagged, _SMALLEST) * bound + extra
        if k > 0 and scale[k] == scale[k - 1] and zero[k] == zero[k - 1]:
            e = approx[k - 1]
        elif k > 0 and scale[k] == scale[0] and zero[k] == zero[0]:
            e = approx[0]
        elif k == 0 and not np.isnan(known_error):
            e = known_error
        elif exactly:
            e = _exact_error(row, scale[k], zero[k], qmin, qmax)
        elif ends and _ends(lo0, hi0, scale[k], zero[k], qmin, qmax) > limit:
            e = _PRUNED
            if _span_deficit(lo0, hi0, scale[k], qmin, qmax) > limit:
                for j in range(k, k_n):
                    approx[j] = _PRUNED
                return
        elif long:
            e = _long_approximate_error(row, scale[k], zero[k], qmin, qmax)
        else:
            e = _approximate_error(row, scale[k], zero[k], qmin, qmax)
        approx[k] = e
        lagged = least
        least = min(least, e)


@njit(cache=True, nogil=True, inline="always")
def _ends(lo0, hi0, scale, zero, qmin, qmax):
    """At most the float32 squared errors `_approximate_error` sums for the slice's extremes
    lo0 and hi0 (values of the slice when not 0), added in float64: their distances
    beyond the decoded extremes of (scale, zero), squared in float32 (no code decodes
    beyond those, and float32 rounding is monotonic). The decoded extremes are those of
    the codes qmin and qmax less the zero point, the larger one the top: a scale of the
    `extreme` rule is negative when the slice's extreme is positive."""
    d = np.float32(scale)
    z = np.float32(zero)
    at_max = (np.float32(qmax) - z) * d
    at_min = (np.float32(qmin) - z) * d
    above = max(np.float32(hi0) - max(at_max, at_min), np.float32(0.0))
    below = min(np.float32(lo0) - min(at_max, at_min), np.float32(0.0))
    return np.float64(above * above) + np.float64(below * below)


@njit(cache=True, nogil=True, inline="always")
def _span_deficit(lo0, hi0, scale, qmin, qmax):
    """At most `_ends` of a scale of this magnitude or less, whatever its zero point: the
    decoded codes span (qmax - qmin) * |scale| at most (times 1 + 2^-24 for their float32
    products), so the extremes' distances beyond them add up to at least the rest D of
    [lo0, hi0], and their squares to at least D^2 / 2. The coarse round's scales only
    shrink (the factors fall, every rounding is monotonic), so once this exceeds the
    pruning limit, which only falls, every later candidate is pruned too. (Computed in
    float64 a little under the true bound: (1 - 2^-20) covers the float32 roundings of
    `_ends`' distances and squares, 2^-40 of the span the float64 ones here.)"""
    span = (hi0 - lo0) * (1.0 - 2.0**-40)
    gap = span - np.float64(qmax - qmin) * abs(scale) * (1.0 + 2.0**-20)
    return 0.0 if gap <= 0.0 else gap * gap * 0.5 * (1.0 - 2.0**-20)


@njit(cache=True, nogil=True, inline="always")
def _contest(approx, scale, zero, k_n, margin, extra, known_exact, exactly, exact):
    """The round's winner when no exact error is to be computed: the candidate of least
    approximate error (the first on ties) when its errors are exact or it is the only
    contender (its exact error then `known_exact` for candidate 0, else NaN: not
    computed). The contenders: those within `margin` times the least, plus `extra`.
    Otherwise -1, exact[k] set for the contenders (NaN: to compute; candidate
    0's `known_exact` unless NaN) and infinity for the others, among them a candidate with
    the scale and zero point of an earlier contender (the same error; the earlier wins)."""
    # the least, then its first (no branch per candidate on the values, which vary by slice)
    least = approx[0]
    for k in range(1, k_n):
        least = min(least, approx[k])
    best = 0
    for k in range(k_n):
        if approx[k] == least:
            best = k
            break
    if exactly:
        exact[best] = least
        return best
    limit = least * margin + extra if least >= _SMALLEST else np.inf
    # usually the least is the only contender: counted first, in a loop of no stores
    within = 0
    for k in range(k_n):
        within += (approx[k] <= limit) & (approx[k] < _PRUNED)
    if within == 1:
        exact[best] = known_exact if best == 0 else np.nan
        return best
    contenders = 0
    for k in range(k_n):
        c = approx[k] <= limit and approx[k] < _PRUNED
        if c:
            for j in range(k):
                if exact[j] != np.inf and scale[j] == scale[k] and zero[j] == zero[k]:
                    c = False
                    break
        exact[k] = np.nan if c else np.inf
        contenders += c
    if contenders == 1:
        exact[best] = known_exact if best == 0 else np.nan
        return best
    if exact[0] != np.inf:
        exact[0] = known_exact
    return -1


@njit(cache=True, nogil=True, inline="always")
def _winner(exact, k_n):
    """The candidate of least exact error (the first on ties)."""
    best = 0
    for k in range(1, k_n):
        if exact[k] < exact[best]:
            best = k
    return best


@_noalias
@njit(cache=True, nogil=True, error_model="numpy")
def entropy_thresholds(slices, amax, levels, n_bins, cands, widths, which, log_n, out, i0,
                       i1):  # pragma: no cover - compiled  # fmt: skip
    """TensorRT-style KL calibration of slices i0..i1: a histogram of |x| in n_bins bins
    over [0, amax]; for each candidate threshold (the bin counts `cands`, each >= levels,
    merged `widths[which]` = cands // levels to a level but the last, which takes the
    rest; `widths`: the distinct ones, increasing), the
    KL divergence between the clipped reference (outliers folded into its last bin) and
    its quantization into `levels` bins spread back over their non-empty bins; out[i] =
    the threshold of least divergence (the upper edge of its last bin; the first one on
    ties). log_n[c] = log(c) for the counts 1..len (log_n[0] = 0)."""
    work = _histogram_work(n_bins, cands.shape[0], widths.shape[0], slices.shape[1])
    for i in range(i0, i1):
        out[i] = _threshold(slices, i, amax[i], levels, cands, widths, which, log_n, work)


@njit(cache=True, nogil=True, inline="always")
def _histogram_work(n_bins, n_c, n_w, length):
    """The KL search's working arrays (`_threshold`) for n_bins bins, n_c candidates of n_w
    level widths, slices of `length` values."""
    return (np.empty(n_bins, dtype=np.int64), np.zeros(n_bins + 1, dtype=np.int64),
            np.zeros(n_bins + 1, dtype=np.int64), np.zeros(n_bins + 1, dtype=np.float64),
            np.empty(n_w, dtype=np.float64), np.empty(n_w, dtype=np.int64),
            np.empty(n_w, dtype=np.int64), np.empty(n_c),
            np.empty(min(length, _BIN_CHUNK), dtype=np.int32))  # fmt: skip


@njit(cache=True, nogil=True, inline="always")
def _threshold(slices, i, amax, levels, cands, widths, which, log_n, work):
    """`entropy_thresholds`' threshold of slice i, whose largest magnitude is `amax` (work:
    `_histogram_work`)."""
    hist, csum, cnz, cplogp, qlogq, below, below_nz, div, bins = work
    if amax == 0.0:
        return 0.0
    width = amax / hist.shape[0]
    _count_bins(slices, i, width, bins, hist)
    _running_sums(hist, csum, cnz, cplogp, log_n)
    _levels(levels, widths, log_n, csum, cnz, qlogq, below, below_nz)
    return _least_divergence(cands, which, log_n, hist, csum, cnz, cplogp, qlogq, below,
                             below_nz, div) * width  # fmt: skip


#: Values whose bins are found at a time (the buffer of a slice of a whole tensor is
#: bounded by it, not by the tensor).
_BIN_CHUNK = 4096


@njit(cache=True, nogil=True, inline="always")
def _count_bins(slices, i, width, bins, hist):
    """hist = counts of |x| of slice i in bins of `width` (the last takes the rest), the
    bins found a chunk of `len(bins)` values at a time."""
    for b in range(hist.shape[0]):  # a slice assignment is numba's slow general path
        hist[b] = 0
    n = slices.shape[1]
    for j0 in range(0, n, bins.shape[0]):
        j1 = min(n, j0 + bins.shape[0])
        _bin_indices(slices, i, j0, j1, width, hist.shape[0] - 1, bins)
        for j in range(j1 - j0):
            hist[uindex(bins[j])] += 1


@njit(cache=True, nogil=True, error_model="numpy")
def _bin_indices(slices, i, j0, j1, width, last, bins):  # pragma: no cover - compiled
    """bins[j - j0] = the bin of |x| of value j of slice i: int(|x| / width), at most
    `last` (apart from the counting, so that the divisions are vectorized)."""
    row = uindex(i)
    for j in range(j1 - j0):
        v = abs(np.float64(slices[row, uindex(j0 + j)]))
        bins[j] = min(np.int32(v / width), np.int32(last))


@njit(cache=True, nogil=True, inline="always")
def _running_sums(hist, csum, cnz, cplogp, log_n):
    """The running sums of the counts `hist`: of the counts, of the non-empty bins, of
    count * log(count)."""
    n_bins = hist.shape[0]
    # empty bins add 0 to every sum (log_n[0] = 0); the sums carried in locals, not read
    # back from the arrays just written (which may alias: a chain through memory)
    total = np.int64(0)
    nonzero = np.int64(0)
    plogp = 0.0
    for b in range(n_bins):
        h = hist[b]
        total += h
        nonzero += h > 0
        plogp += h * log_n[uindex(h)]
        csum[b + 1] = total
        cnz[b + 1] = nonzero
        cplogp[b + 1] = plogp


@njit(cache=True, nogil=True, inline="always")
def _levels(levels, widths, log_n, csum, cnz, qlogq, below, below_nz):
    """For every level width w = widths[j] (bins merged to a level), the sum qlogq[j] of
    t * log(t / nz) over the levels but the last (a level's count t spread over its nz
    non-empty bins), in level order; below[j], below_nz[j]: the counts before the last
    level. (With _ACROSS widths or more, level by level across the widths: each width's
    sums are independent of the others', so the loop over them is not one chain of
    dependent additions; with fewer, width by width, the sums in locals.)"""
    n_w = widths.shape[0]
    if n_w < _ACROSS:
        for j in range(n_w):
            w = widths[j]
            q = 0.0
            done = done_nz = np.int64(0)
            for m in range(1, levels):
                upto = csum[uindex(m * w)]
                upto_nz = cnz[uindex(m * w)]
                t = upto - done
                q += t * (log_n[uindex(t)] - log_n[uindex(upto_nz - done_nz)])
                done = upto
                done_nz = upto_nz
            qlogq[j] = q
            below[j] = done
            below_nz[j] = done_nz
        return
    for j in range(n_w):
        qlogq[j] = 0.0
        below[j] = below_nz[j] = 0
    for m in range(1, levels):
        for j in range(n_w):
            at = uindex(m * widths[j])
            upto = csum[at]
            upto_nz = cnz[at]
            t = upto - below[j]
            qlogq[j] += t * (log_n[uindex(t)] - log_n[uindex(upto_nz - below_nz[j])])
            below[j] = upto
            below_nz[j] = upto_nz


#: Fewest level widths `_levels` sums level by level across.
_ACROSS = 8


@njit(cache=True, nogil=True, inline="always")
def _least_divergence(cands, which, log_n, hist, csum, cnz, cplogp, qlogq, below, below_nz,
                      div):  # fmt: skip
    """The candidate bin count of least KL divergence (the first on ties; all bins when
    every candidate is infinitely divergent); `div` takes each candidate's divergence.
    (Found in one loop, the least is taken in a second: a loop that both stores each
    divergence and keeps the least is not vectorized, and a third slower.)"""
    n_bins = hist.shape[0]
    total = csum[uindex(n_bins)]
    base = total * log_n[uindex(total)]
    n_c = cands.shape[0]
    for k in range(n_c):
        div[k] = _divergence(cands[k], uindex(which[k]), log_n, hist, csum, cnz, cplogp, qlogq,
                             below, below_nz, total, base)  # fmt: skip
    least = np.inf
    for k in range(n_c):
        least = div[k] if div[k] < least else least
    # the divergence is d / total: the first candidate whose quotient equals the least
    # one's (only numerators next to the least can round to the same quotient)
    if not least < np.inf:
        return n_bins
    kl = least / total
    near = abs(least) * 2.0**-40 + 2.0**-900
    for k in range(n_c):
        d = div[k]
        if d == least or (d - least <= near and d / total == kl):
            return cands[k]
    return n_bins


@njit(cache=True, nogil=True, inline="always")
def _divergence(c, j, log_n, hist, csum, cnz, cplogp, qlogq, below, below_nz, total, base):
    """The KL divergence times `total` of the threshold of c bins, its levels but the last
    of width j (`_levels`) (NaN: mass in the last level but no values, never the least)."""
    upto = csum[uindex(c)]
    h = hist[uindex(c - 1)]
    outliers = total - upto
    last = h + outliers
    plogp = cplogp[uindex(c - 1)] + last * log_n[uindex(last)]
    # the last level takes the outliers too (into bin c - 1, non-empty if it was not)
    t = upto - below[j]
    nz = cnz[uindex(c)] - below_nz[j] + ((h == 0) & (last > 0))
    mass = t + outliers
    # with no mass this adds 0 * -log_n[nz], a zero: the sum is unchanged
    qlogq_k = qlogq[j] + mass * (log_n[uindex(t)] - log_n[uindex(nz)])
    d = plogp - base - qlogq_k + total * log_n[uindex(upto)]
    return np.nan if (mass > 0) & (t == 0) else d


@_noalias
@njit(cache=True, nogil=True, error_model="numpy")
def minmax_rows(x, bits, lo, hi, qmin, qmax, symmetric, extreme, kind, tiny, half_table, div32,
                codes, scale, zero, per, t0, t1):  # pragma: no cover - compiled  # fmt: skip
    """MinMax calibration and quantization of the rows of x (S, G) of tasks t0..t1 (`per`
    rows each, at most ROWS) in one pass while they are in cache (`bits`: x as int32),
    exactly as `arithmetic.parameters` and `quantize` compute them, or with the ranges
    lo, hi (S,) float64 when not empty (another method's); scale (S,) float64 or float32,
    zero (S,) of the codes' dtype. Returns how many rows held a NaN or an infinity
    (MinMax; their outputs are then not written)."""
    bad = 0
    given = lo.shape[0] > 0
    s_n = x.shape[0]
    a, b, d, z, finite = _task_work()
    for task in range(t0, t1):
        r0, m = _task_span(task, per, s_n)
        for r in range(m):
            if given:
                a[r] = lo[uindex(r0 + r)]
                b[r] = hi[uindex(r0 + r)]
            else:
                a[r], b[r], finite[r] = _extremes(bits, r0 + r)
        bad += _encode_task(x, r0, m, a, b, finite, qmin, qmax, symmetric, extreme, kind, tiny,
                            half_table, div32, codes, scale, zero, d, z)  # fmt: skip
    return bad


@njit(cache=True, nogil=True, inline="always")
def _task_span(task, per, s_n):
    """The first row of a task of `per` rows of s_n and how many it has."""
    r0 = task * per
    return r0, min(s_n, r0 + per) - r0


@njit(cache=True, nogil=True, inline="always")
def _task_work():
    """The working rows of a task of at most ROWS rows: their ranges (a, b), scales and zero
    points (d, z), and whether each is finite."""
    return (np.empty(ROWS), np.empty(ROWS), np.empty(ROWS), np.empty(ROWS),
            np.ones(ROWS, dtype=np.bool_))  # fmt: skip


@njit(cache=True, nogil=True, inline="always")
def _encode_task(x, r0, m, a, b, finite, qmin, qmax, symmetric, extreme, kind, tiny,
                 half_table, div32, codes, scale, zero, d, z):  # fmt: skip
    """Rows r0..r0 + m of x quantized with the ranges a, b (`arithmetic.parameters`'
    scale and zero point, into scale, zero; d, z: working rows), but those not `finite`;
    how many were not."""
    if kind == SCALE_F32:
        # float32 scales: no table look-up, so this loop is vectorized
        for r in range(m):
            d[r], z[r] = _scale_zero_f32(a[r], b[r], qmin, qmax, symmetric, extreme, tiny)
    else:
        for r in range(m):
            if finite[r]:
                d[r], z[r] = _scale_zero(a[r], b[r], qmin, qmax, symmetric, extreme, kind, tiny,
                                         half_table)  # fmt: skip
    bad = 0
    for r in range(m):
        if not finite[r]:
            bad += 1
            continue
        scale[r0 + r] = d[r]
        zero[r0 + r] = z[r]
        _quantize_row(x, r0 + r, 0, x.shape[1], d[r], z[r], qmin, qmax, div32, codes)
    return bad


@_noalias
@njit(cache=True, nogil=True, error_model="numpy")
def mse_rows(x, bits, coarse, fine, shortcuts, qmin, qmax, symmetric, extreme, kind, tiny,
             half_table, div32, codes, scale, zero, per, t0, t1):  # pragma: no cover  # fmt: skip
    """`minmax_rows` with the MSE search's ranges (`_mse_search` of each row's MinMax
    range widened to 0; a row of equal values keeps it): each task's rows found, searched
    and quantized while they are in cache. A row whose MinMax scale overflows its dtype
    counts as one that held a NaN or an infinity (the general path then says which)."""
    s_n, q_n = x.shape
    a, b, d, z, finite = _task_work()
    factors, cscale, czero, approx, exact = _search_rows(len(coarse), len(fine))
    long = q_n > SUM_BLOCK
    bad = 0
    for task in range(t0, t1):
        r0, m = _task_span(task, per, s_n)
        for r in range(m):
            lo, hi, finite[r] = _extremes(bits, r0 + r)
            lo0 = min(lo, 0.0)
            hi0 = max(hi, 0.0)
            # (a float32 scale of finite extremes is finite)
            widest = 1.0
            if kind != SCALE_F32:
                widest, _ = _scale_zero(lo0, hi0, qmin, qmax, symmetric, extreme, kind, tiny,
                                        half_table)  # fmt: skip
            if not (finite[r] and np.isfinite(widest)):
                finite[r] = False
            elif lo == hi:
                a[r], b[r] = lo, hi
            else:
                f = _mse_search(x[r0 + r], lo0, hi0, qmin, qmax, symmetric, extreme, coarse, fine,
                                kind, tiny, half_table, shortcuts, long, factors,
                                cscale, czero, approx, exact)  # fmt: skip
                a[r], b[r] = lo0 * f, hi0 * f
        bad += _encode_task(x, r0, m, a, b, finite, qmin, qmax, symmetric, extreme, kind, tiny,
                            half_table, div32, codes, scale, zero, d, z)  # fmt: skip
    return bad


@_noalias
@njit(cache=True, nogil=True, error_model="numpy")
def entropy_rows(x, bits, levels, n_bins, cands, widths, which, log_n, qmin, qmax, symmetric,
                 extreme, kind, tiny, half_table, div32, codes, scale, zero, per, t0,
                 t1):  # pragma: no cover - compiled  # fmt: skip
    """`minmax_rows` with the entropy (KL) ranges (`entropy_thresholds`' threshold of each
    row, clipped to its extremes; a row of equal values keeps them): each task's rows
    found, searched and quantized while they are in cache."""
    s_n, q_n = x.shape
    a, b, d, z, finite = _task_work()
    work = _histogram_work(n_bins, cands.shape[0], widths.shape[0], q_n)
    bad = 0
    for task in range(t0, t1):
        r0, m = _task_span(task, per, s_n)
        for r in range(m):
            lo, hi, finite[r] = _extremes(bits, r0 + r)
            if not finite[r] or lo == hi:
                a[r], b[r] = lo, hi
                continue
            t = _threshold(x, r0 + r, max(-lo, hi), levels, cands, widths, which, log_n, work)
            a[r], b[r] = max(lo, -t), min(hi, t)
        bad += _encode_task(x, r0, m, a, b, finite, qmin, qmax, symmetric, extreme, kind, tiny,
                            half_table, div32, codes, scale, zero, d, z)  # fmt: skip
    return bad


@_noalias
@njit(cache=True, nogil=True)
def minmax_blocks_down(x, bits, size, qmin, qmax, symmetric, extreme, kind, tiny, half_table,
                       div32, codes, packed, scale, zero, j0, j1):  # pragma: no cover  # fmt: skip
    """MinMax calibration and quantization of blocks j0..j1 of `size` consecutive rows of
    each column of x (K, N) (`bits`: x as int32), the last block the rest, as `minmax_rows`
    does for rows, reading x row by row (vectorized across the columns); codes (K, N),
    scale and zero (blocks, N) float64. Returns how many blocks held a NaN or an infinity
    (their outputs are then not all written).

    With `packed` (N, blocks, size / 2) uint8 not empty (4-bit codes; `codes` then has no
    rows, only the dtype), the codes go there instead, transposed: column c's block j
    offset to the unsigned range (by -qmin), two a byte, low nibble first, the last block's
    padding codes its zero point (unsigned range)."""
    n = x.shape[1]
    nibbles = packed.shape[0] > 0
    bad = 0
    d = np.empty(n, dtype=x.dtype)
    z = np.empty(n, dtype=x.dtype)
    tile = np.empty((size if nibbles else 0, n), dtype=codes.dtype)
    pairs = np.empty((size // 2 if nibbles else 0, n), dtype=np.uint8)
    for j in range(j0, j1):
        r0 = j * size
        r1 = min(x.shape[0], r0 + size)
        bad += _block_parameters(x, bits, r0, r1, qmin, qmax, symmetric, extreme, kind, tiny,
                                 half_table, scale[j], zero[j], d, z)  # fmt: skip
        for r in range(r0, r1):
            row = tile[r - r0] if nibbles else codes[r]
            _quantize_across(x[r], scale[j], zero[j], d, z, qmin, qmax, div32, row)
        if nibbles:
            _pack_tile(tile, r1 - r0, zero[j], -qmin, pairs, packed[:, j])
    return bad


@njit(cache=True, nogil=True)
def _pack_tile(tile, rows, zero, offset, pairs, packed):  # pragma: no cover - compiled
    """packed (N, size / 2) of a tile of codes (size, N), its rows past `rows` the zero
    point: see `minmax_blocks_down`. The bytes are made a pair of rows at a time into
    `pairs` (size / 2, N) (vectorized across the columns), then transposed."""
    n = tile.shape[1]
    for r in range(rows, tile.shape[0]):
        for c in range(n):
            tile[r, c] = zero[c]
    half = tile.shape[0] // 2
    for i in range(half):
        low = tile[2 * i]
        high = tile[2 * i + 1]
        out = pairs[i]
        for c in range(n):
            lo4 = (np.int32(low[c]) + offset) & 0xF
            hi4 = (np.int32(high[c]) + offset) & 0xF
            out[c] = np.uint8(lo4 | (hi4 << 4))
    for c in range(n):
        for i in range(half):
            packed[c, i] = pairs[i, c]


@njit(cache=True, nogil=True)
def _block_parameters(x, bits, r0, r1, qmin, qmax, symmetric, extreme, kind, tiny, half_table,
                      scale, zero, d, z):  # pragma: no cover - compiled  # fmt: skip
    """Scale and zero point (float64, and as float32 in d, z) of each column's rows r0..r1
    of x; how many columns held a NaN or an infinity."""
    n = x.shape[1]
    lo = x[r0].copy()
    hi = x[r0].copy()
    odd = np.zeros(n, dtype=np.int32)
    for r in range(r0, r1):
        for c in range(n):
            v = x[r, c]
            lo[c] = min(lo[c], v)
            hi[c] = max(hi[c], v)
            odd[c] |= np.int32((bits[r, c] & np.int32(0x7F800000)) == np.int32(0x7F800000))
    bad = 0
    for c in range(n):
        bad += odd[c]
        scale[c], zero[c] = _scale_zero(np.float64(lo[c]), np.float64(hi[c]), qmin, qmax,
                                        symmetric, extreme, kind, tiny, half_table)  # fmt: skip
        d[c] = np.float32(scale[c])
        z[c] = np.float32(zero[c])
    return bad


@njit(cache=True, nogil=True, error_model="numpy")
def _quantize_across(row, scale, zero, d, z, qmin, qmax, div32, out):  # pragma: no cover
    """`_quantize_row` with a scale and zero point per value (one per column; d, z: the
    same as float32). (NumPy's error model: no zero-division check per value, which would
    keep the loop from being vectorized; no scale is 0.)"""
    if div32:
        lo32 = np.float32(qmin)
        hi32 = np.float32(qmax)
        for c in range(row.shape[0]):
            out[c] = min(max(np.rint(row[c] / d[c]) + z[c], lo32), hi32)
        return
    lo = np.float64(qmin)
    hi = np.float64(qmax)
    for c in range(row.shape[0]):
        q = np.rint(np.float64(row[c]) / scale[c]) + zero[c]
        out[c] = min(max(q, lo), hi)
