"""The per-sub-block searches of the K-quants, where the encoding time goes.

The searches run on K sub-blocks at once: X[i, k] is element i of sub-block k, and every
per-sub-block quantity is a row of K lanes. Each lane performs exactly the reference's
sequence of float32 operations for its sub-block (the inner loops over lanes carry no
dependency, so the compiler can vectorise across sub-blocks without reordering any sum);
where the reference branches per sub-block, the lanes select without branching.
"""

from __future__ import annotations

import numpy as np
from numba import njit

from bundler.codecs.kquants.common import EPS, F0, F1, JIT, TENTH, nearest


@njit(**JIT)
def scale_min_lanes(X, W, nmax, rmin, rdelta, nstep, use_mad, L, Laux, XM, S, scale, the_min):
    """Codes 0..nmax, scale and min of each sub-block (ggml's make_qkx2_quants).

    Starts from the full-range grid, then tries `nstep + 1` grids scaled by
    (nmax + rmin + s*rdelta) / (max - min), keeping the one with the least weighted error
    (|err| when `use_mad`, else err^2); each grid's scale and min are the weighted least
    squares fit, the min clamped to <= 0. A grid that wins becomes the origin (its min) of
    the next ones, as in the reference. Fills L (n, K), scale[k] and the_min[k] (= -min).
    """
    n, K = X.shape
    lo, hi, sum_w, sum_x, span = S[0], S[1], S[2], S[3], S[4]
    iscale, best, sl, sl2, sxl = S[5], S[6], S[7], S[8], S[9]
    ts, tm, err, flat, upd = S[10], S[11], S[12], S[13], S[14]
    for k in range(K):
        lo[k] = X[0, k]
        hi[k] = X[0, k]
        sum_w[k] = W[0, k]
        sum_x[k] = W[0, k] * X[0, k]
    for i in range(1, n):
        for k in range(K):
            v = X[i, k]
            lo[k] = v if v < lo[k] else lo[k]
            hi[k] = v if v > hi[k] else hi[k]
            sum_w[k] += W[i, k]
            sum_x[k] += W[i, k] * v
    fmax = np.float32(nmax)
    for k in range(K):
        lo[k] = F0 if lo[k] > F0 else lo[k]
        flat[k] = F1 if hi[k] == lo[k] else F0
        span[k] = hi[k] - lo[k]
        iscale[k] = fmax / span[k]
        scale[k] = F1 / iscale[k]
        best[k] = F0
    for i in range(n):
        for k in range(K):
            XM[i, k] = X[i, k] - lo[k]
    for i in range(n):
        for k in range(K):
            q = min(nmax, max(0, nearest(iscale[k] * XM[i, k])))
            L[i, k] = q
            diff = scale[k] * np.float32(q) + lo[k] - X[i, k]
            diff = abs(diff) if use_mad else diff * diff
            best[k] += W[i, k] * diff
    for step in range(nstep + 1):
        grid = rmin + rdelta * np.float32(step) + fmax
        for k in range(K):
            iscale[k] = grid / span[k]
            sl[k] = F0
            sl2[k] = F0
            sxl[k] = F0
            err[k] = F0
        for i in range(n):
            for k in range(K):
                q = min(nmax, max(0, nearest(iscale[k] * XM[i, k])))
                Laux[i, k] = q
                fq = np.float32(q)
                wq = W[i, k] * fq
                sl[k] += wq
                sl2[k] += wq * fq
                sxl[k] += wq * X[i, k]
        for k in range(K):
            det = sum_w[k] * sl2[k] - sl[k] * sl[k]
            a = (sum_w[k] * sxl[k] - sum_x[k] * sl[k]) / det
            m = (sl2[k] * sum_x[k] - sl[k] * sxl[k]) / det
            positive = m > F0  # a min above zero is clamped, the scale refitted
            ts[k] = sxl[k] / sl2[k] if positive else a
            tm[k] = F0 if positive else m
            upd[k] = F1 if det > F0 else F0
        for i in range(n):
            for k in range(K):
                diff = ts[k] * np.float32(Laux[i, k]) + tm[k] - X[i, k]
                diff = abs(diff) if use_mad else diff * diff
                err[k] += W[i, k] * diff
        any_upd = False
        for k in range(K):
            take = (upd[k] != F0) & (err[k] < best[k]) & (flat[k] == F0)
            upd[k] = F1 if take else F0
            best[k] = err[k] if take else best[k]
            scale[k] = ts[k] if take else scale[k]
            lo[k] = tm[k] if take else lo[k]
            span[k] = hi[k] - lo[k]
            any_upd |= take
        if any_upd:
            # branch-free blend (upd is 0 or 1); an unchanged lane's XM is recomputed exactly
            for i in range(n):
                for k in range(K):
                    L[i, k] += (Laux[i, k] - L[i, k]) * np.int32(upd[k])
                    XM[i, k] = X[i, k] - lo[k]
    for k in range(K):
        the_min[k] = -lo[k]
        if flat[k] != F0:
            scale[k] = F0
            for i in range(n):
                L[i, k] = 0


@njit(**JIT)
def _signed_max_lanes(X, vmax, amax):
    """Per lane the value of largest magnitude and that magnitude; the first wins ties."""
    n, K = X.shape
    for k in range(K):
        vmax[k] = F0
        amax[k] = F0
    for i in range(n):
        for k in range(K):
            # every operand loaded first: a load in one arm only compiles to a masked load
            x, a, v = X[i, k], amax[k], vmax[k]
            ax = abs(x)
            big = ax > a
            amax[k] = ax if big else a
            vmax[k] = x if big else v


@njit(**JIT)
def _signed_grid(X, W, WX, grid, nmax, vmax, iscale, L, sumlx, suml2):
    """Codes of the grid `grid / max` (offset nmax) and their weighted sums per lane."""
    n, K = X.shape
    for k in range(K):
        iscale[k] = grid / vmax[k]
        sumlx[k] = F0
        suml2[k] = F0
    for i in range(n):
        for k in range(K):
            q = max(-nmax, min(nmax - 1, nearest(iscale[k] * X[i, k])))
            L[i, k] = q + nmax
            fq = np.float32(q)
            sumlx[k] += WX[i, k] * fq
            suml2[k] += W[i, k] * fq * fq


@njit(**JIT)
def signed_lanes(X, nmax, L, Laux, W, WX, S, scale, weighted=False):
    """Codes 0..2*nmax-1 (offset nmax) and signed scale of each sub-block, weights x^2, or
    the given W when `weighted` (ggml's make_qx_quants with rmse_type 1): the grid
    -nmax/max, then the grids -(nmax + s/10)/max for s = -9..9, keeping the best weighted
    least-squares fit."""
    n, K = X.shape
    vmax, amax, iscale, sumlx, suml2, best = S[0], S[1], S[2], S[3], S[4], S[5]
    upd = S[6]
    _signed_max_lanes(X, vmax, amax)
    fmax = np.float32(nmax)
    if not weighted:
        for i in range(n):
            for k in range(K):
                W[i, k] = X[i, k] * X[i, k]
    for i in range(n):
        for k in range(K):
            WX[i, k] = W[i, k] * X[i, k]
    _signed_grid(X, W, WX, -fmax, nmax, vmax, iscale, L, sumlx, suml2)
    for k in range(K):
        scale[k] = sumlx[k] / suml2[k] if suml2[k] != F0 else F0
        best[k] = scale[k] * sumlx[k]
    for step in range(-9, 10):
        if step == 0:
            continue
        grid = -(fmax + TENTH * np.float32(step))
        _signed_grid(X, W, WX, grid, nmax, vmax, iscale, Laux, sumlx, suml2)
        any_upd = False
        for k in range(K):
            take = (suml2[k] > F0) & (sumlx[k] * sumlx[k] > best[k] * suml2[k])
            fit = sumlx[k] / suml2[k]
            upd[k] = F1 if take else F0
            scale[k] = fit if take else scale[k]
            best[k] = fit * sumlx[k] if take else best[k]
            any_upd |= take
        if any_upd:
            for i in range(n):
                for k in range(K):
                    L[i, k] += (Laux[i, k] - L[i, k]) * np.int32(upd[k])
    for k in range(K):
        if amax[k] < EPS:
            scale[k] = F0
            for i in range(n):
                L[i, k] = 0


#: No lower bound on make_qp_quants' codes (below any code the search can produce).
_NO_FLOOR = -(1 << 30)


@njit(**JIT)
def _descent_lanes(X, W, L, sumlx, suml2, lo, hi, qp):
    """Up to five rounds of coordinate descent on the weighted least-squares fit sumlx^2 /
    suml2: each code in turn moves to its best value in lo..hi when that improves the fit.
    make_q3_quants (`qp` False) tries a move when the sums without the code have
    sumlx > 0 and keeps it when the new suml2 > 0; make_qp_quants (`qp`) also needs the old
    suml2 > 0 and stores codes as uint8. A lane whose round changed nothing would change
    nothing in a further round either, so running the lanes until all settle is exact."""
    n, K = X.shape
    for _ in range(5):
        changed = False
        for i in range(n):
            for k in range(K):
                w, x, code, slx_k, sl2_k = W[i, k], X[i, k], L[i, k], sumlx[k], suml2[k]
                fl = np.float32(code)
                slx0 = slx_k - w * x * fl
                sl20 = sl2_k - w * fl * fl
                q = max(lo, min(hi, nearest(x * sl20 / slx0)))
                fq = np.float32(q)
                slx = slx0 + w * x * fq
                sl2 = sl20 + w * fq * fq
                take = (
                    (slx0 > F0)
                    & (q != code)
                    & ((sl20 > F0) if qp else (sl2 > F0))
                    & (slx * slx * sl2_k > slx_k * slx_k * sl2)
                )
                L[i, k] = ((q & 0xFF) if qp else q) if take else code
                sumlx[k] = slx if take else slx_k
                suml2[k] = sl2 if take else sl2_k
                changed |= take
        if not changed:
            break


@njit(**JIT)
def _fit_lanes(top, sumlx, suml2, offset, L, scale):
    """Each lane's scale sumlx / suml2 (0 when suml2 is not positive) and codes + offset,
    or scale 0 and codes 0 for a lane whose largest value `top` is below GROUP_MAX_EPS."""
    n, K = L.shape
    for k in range(K):
        zero = top[k] < EPS
        scale[k] = sumlx[k] / suml2[k] if suml2[k] > F0 else F0
        if zero:
            scale[k] = F0
        for i in range(n):
            L[i, k] = 0 if zero else L[i, k] + offset


@njit(**JIT)
def q3_lanes(X, L, W, WX, S, scale):
    """Codes 0..7 (offset 4) and signed scale of each Q3_K sub-block (ggml's make_q3_quants
    with rmse): the grid -4/max, then up to five rounds of coordinate descent on the
    weighted (x^2) least-squares objective."""
    n, K = X.shape
    nmax = 4
    vmax, amax, sumlx, suml2 = S[0], S[1], S[2], S[3]
    _signed_max_lanes(X, vmax, amax)
    for k in range(K):
        sumlx[k] = F0
        suml2[k] = F0
        S[4, k] = -np.float32(nmax) / vmax[k]
    for i in range(n):
        for k in range(K):
            q = max(-nmax, min(nmax - 1, nearest(S[4, k] * X[i, k])))
            L[i, k] = q
            W[i, k] = X[i, k] * X[i, k]
            WX[i, k] = W[i, k] * X[i, k]
            fq = np.float32(q)
            sumlx[k] += WX[i, k] * fq
            suml2[k] += W[i, k] * fq * fq
    _descent_lanes(X, W, L, sumlx, suml2, -nmax, nmax - 1, False)
    _fit_lanes(amax, sumlx, suml2, nmax, L, scale)


@njit(**JIT)
def qp_lanes(X, W, nmax, L, S, scale):
    """Codes 0..nmax and scale of each lane's non-negative values, weights W (ggml's
    make_qp_quants, which quantizes the sub-block scales and mins of the weighted K-quants):
    the best of the grids (nmax + s/10)/max for s = -4..4 by weighted squared error, then up
    to five rounds of coordinate descent on the weighted least-squares fit. Codes are kept
    as the reference's uint8 keeps them (a negative one wraps)."""
    n, K = X.shape
    vmax, iscale, best, mse, sumlx, suml2, inv = S[0], S[1], S[2], S[3], S[4], S[5], S[6]
    for k in range(K):
        vmax[k] = F0
    for i in range(n):
        for k in range(K):
            vmax[k] = vmax[k] if vmax[k] > X[i, k] else X[i, k]
    fmax = np.float32(nmax)
    for k in range(K):
        iscale[k] = fmax / vmax[k]
        inv[k] = F1 / iscale[k]
        best[k] = F0
    for i in range(n):
        for k in range(K):
            q = nearest(iscale[k] * X[i, k]) & 0xFF
            diff = X[i, k] - inv[k] * np.float32(q)
            best[k] += W[i, k] * diff * diff
    for step in range(-4, 5):
        if step == 0:
            continue
        grid = TENTH * np.float32(step) + fmax
        for k in range(K):
            sumlx[k] = grid / vmax[k]  # this grid's iscale
            inv[k] = F1 / sumlx[k]
            mse[k] = F0
        for i in range(n):
            for k in range(K):
                q = min(nmax, nearest(sumlx[k] * X[i, k]))
                diff = X[i, k] - inv[k] * np.float32(q)
                mse[k] += W[i, k] * diff * diff
        for k in range(K):
            take = mse[k] < best[k]
            best[k] = mse[k] if take else best[k]
            iscale[k] = sumlx[k] if take else iscale[k]
    for k in range(K):
        sumlx[k] = F0
        suml2[k] = F0
    for i in range(n):
        for k in range(K):
            q = min(nmax, nearest(iscale[k] * X[i, k]))
            L[i, k] = q & 0xFF
            fq = np.float32(q)
            sumlx[k] += W[i, k] * X[i, k] * fq
            suml2[k] += W[i, k] * fq * fq
    _descent_lanes(X, W, L, sumlx, suml2, _NO_FLOOR, nmax, True)
    _fit_lanes(vmax, sumlx, suml2, 0, L, scale)


@njit(**JIT)
def importance_lanes(X, qw, col, sigma2, plain, W):
    """Search weights of the lanes from an importance row `qw`: element i of lane k is
    column col[k] + i; its weight is qw[c] * sqrt(sigma2[k] + x^2) as ggml weighs it, or
    qw[c] itself when `plain` (Q6_K)."""
    n, K = X.shape
    for i in range(n):
        for k in range(K):
            w = qw[col[k] + i]
            W[i, k] = w if plain else w * np.sqrt(sigma2[k] + X[i, k] * X[i, k])
