"""Compiled loops of the affine codecs: quantizing, the MSE search's errors, the entropy
(KL) threshold search. Everything else is numpy.
"""

from __future__ import annotations

import numpy as np
from numba import njit, prange

#: Values quantized per parallel task.
_CHUNK = 8192


@njit(cache=True, nogil=True, parallel=True)
def quantize(x, scale, zero, qmin, qmax, out):  # pragma: no cover - compiled
    """x (P, S, Q) float32; scale, zero (Ps, S) float64 with Ps 1 or P; out (P, S, Q) ints.

    q = clamp(rint(x / scale) + zero, qmin, qmax), the quotient in float64 (rint rounds half
    to even)."""
    p_n, s_n, q_n = x.shape
    per = (q_n + _CHUNK - 1) // _CHUNK
    shared = scale.shape[0] == 1
    lo = np.float64(qmin)
    hi = np.float64(qmax)
    for task in prange(p_n * s_n * per):
        ps = task // per
        c = task % per
        p = ps // s_n
        s = ps % s_n
        pp = 0 if shared else p
        d = scale[pp, s]
        z = zero[pp, s]
        end = min(q_n, (c + 1) * _CHUNK)
        for j in range(c * _CHUNK, end):
            q = np.rint(np.float64(x[p, s, j]) / d) + z
            out[p, s, j] = min(max(q, lo), hi)


@njit(cache=True, nogil=True, parallel=True)
def squared_errors(slices, scale, zero, qmin, qmax, err):  # pragma: no cover - compiled
    """err[i, k]: sum over slice i of (x - x')^2 quantized with scale[i, k], zero[i, k],
    x' decoded in float32 exactly as `dequantize` does."""
    s_n, l_n = slices.shape
    k_n = scale.shape[1]
    lo = np.float64(qmin)
    hi = np.float64(qmax)
    for t in prange(s_n * k_n):
        i = t // k_n
        k = t % k_n
        d = scale[i, k]
        d32 = np.float32(d)
        z = zero[i, k]
        e = 0.0
        for j in range(l_n):
            v = slices[i, j]
            q = min(max(np.rint(np.float64(v) / d) + z, lo), hi)
            r = np.float32(q - z) * d32
            e += (np.float64(v) - np.float64(r)) ** 2
        err[i, k] = e


@njit(cache=True, nogil=True, parallel=True, fastmath={"reassoc"})
def approximate_errors(slices, scale, zero, qmin, qmax, err):  # pragma: no cover - compiled
    """`squared_errors` for ranking candidates quickly: float32, multiplying by the inverse
    scale, the sum reassociated (vectorized), so a few ulps off; the search re-ranks its best
    candidates with `squared_errors`."""
    s_n, l_n = slices.shape
    k_n = scale.shape[1]
    lo = np.float32(qmin)
    hi = np.float32(qmax)
    for t in prange(s_n * k_n):
        i = t // k_n
        k = t % k_n
        d = np.float32(scale[i, k])
        inv = np.float32(1.0) / d
        z = np.float32(zero[i, k])
        e = np.float32(0.0)
        for j in range(l_n):
            v = slices[i, j]
            q = min(max(np.float32(np.rint(v * inv)) + z, lo), hi)
            r = (q - z) * d
            e += (v - r) * (v - r)
        err[i, k] = e


#: Slices per parallel task of the entropy search (its buffers are made once per task).
_SLICES = 64


@njit(cache=True, nogil=True, parallel=True)
def entropy_thresholds(slices, amax, levels, n_bins, n_candidates, log_n, out):  # pragma: no cover
    """TensorRT-style KL calibration per slice: a histogram of |x| in n_bins bins over
    [0, amax]; for each candidate threshold (bins levels..n_bins), the KL divergence between
    the clipped reference (outliers folded into its last bin) and its quantization into
    `levels` bins spread back over their non-empty bins; out[i] = the threshold of least
    divergence (the upper edge of its last bin). log_n[c] = log(c) for the counts 1..len."""
    s_n = slices.shape[0]
    for task in prange((s_n + _SLICES - 1) // _SLICES):
        hist = np.empty(n_bins, dtype=np.float64)
        csum = np.zeros(n_bins + 1, dtype=np.float64)
        cnz = np.zeros(n_bins + 1, dtype=np.float64)
        cplogp = np.zeros(n_bins + 1, dtype=np.float64)
        for i in range(task * _SLICES, min(s_n, (task + 1) * _SLICES)):
            out[i] = _entropy_one(
                slices[i], amax[i], levels, n_bins, n_candidates, log_n, hist, csum, cnz, cplogp
            )


@njit(cache=True, nogil=True, inline="always")
def _entropy_one(row, a, levels, n_bins, n_candidates, log_n, hist, csum, cnz, cplogp):
    if a == 0.0:
        return 0.0
    width = a / n_bins
    hist[:] = 0.0
    for j in range(row.shape[0]):
        b = int(abs(np.float64(row[j])) / width)
        if b >= n_bins:
            b = n_bins - 1
        hist[b] += 1.0
    for b in range(n_bins):
        h = hist[b]
        csum[b + 1] = csum[b] + h
        cnz[b + 1] = cnz[b] + (1.0 if h > 0 else 0.0)
        cplogp[b + 1] = cplogp[b] + (h * log_n[int(h)] if h > 0 else 0.0)
    total = csum[n_bins]
    best = np.inf
    best_c = n_bins
    span = n_bins - levels
    for k in range(n_candidates):
        c = n_bins if n_candidates == 1 else levels + (span * k) // (n_candidates - 1)
        outliers = total - csum[c]
        last = hist[c - 1] + outliers
        plogp = cplogp[c - 1] + (last * log_n[int(last)] if last > 0 else 0.0)
        merged = c // levels
        qlogq = 0.0
        infinite = False
        for m in range(levels):
            start = m * merged
            end = c if m == levels - 1 else start + merged
            t = csum[end] - csum[start]
            nz = cnz[end] - cnz[start]
            mass = t
            if end == c:
                mass += outliers
                if hist[c - 1] == 0 and last > 0:
                    nz += 1.0
            if mass > 0:
                if t == 0:
                    infinite = True
                    break
                qlogq += mass * (log_n[int(t)] - log_n[int(nz)])
        if infinite:
            continue
        kl = (plogp - total * log_n[int(total)] - qlogq + total * log_n[int(csum[c])]) / total
        if kl < best:
            best = kl
            best_c = c
    return best_c * width


@njit(cache=True, nogil=True, parallel=True)
def minmax_groups(x, symmetric, qmin, qmax, codes, scale, zero):  # pragma: no cover - compiled
    """MinMax calibration and quantization of each row of x (S, G) in one pass, float32
    scales, exactly as `arithmetic.parameters` and `quantize` compute them; returns how many
    rows held a NaN or an infinity (their outputs are then not written)."""
    s_n, g_n = x.shape
    bad = 0
    lo_q = np.float64(qmin)
    hi_q = np.float64(qmax)
    half = (np.float64(qmax) - np.float64(qmin)) / 2.0
    span = np.float64(qmax) - np.float64(qmin)
    tiny = np.float32(1.401298464324817e-45)
    for i in prange(s_n):
        mn = x[i, 0]
        mx = x[i, 0]
        check = np.float32(0.0)
        for j in range(g_n):
            v = x[i, j]
            mn = min(mn, v)
            mx = max(mx, v)
            check += v - v
        if check != 0.0 or check != check:
            bad += 1
            continue
        lo = np.float64(mn)
        hi = np.float64(mx)
        lo0 = min(lo, 0.0)
        hi0 = max(hi, 0.0)
        if lo == hi:
            s = abs(lo)
        elif symmetric:
            s = max(-lo0, hi0) / half
        else:
            s = (hi0 - lo0) / span
        if s == 0.0:
            s = 1.0
        s32 = np.float32(s)
        if s32 == 0.0:
            s32 = tiny
        d = np.float64(s32)
        z = 0.0 if symmetric else min(max(np.rint(lo_q - lo0 / d), lo_q), hi_q)
        scale[i] = s32
        zero[i] = np.int64(z)
        for j in range(g_n):
            q = np.rint(np.float64(x[i, j]) / d) + z
            codes[i, j] = min(max(q, lo_q), hi_q)
    return bad
