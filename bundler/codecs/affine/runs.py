"""The affine kernels as the codecs call them: each cuts its work (rows, blocks, tasks of
`kernels`) into one range per thread in effect (`split_run`) and runs the compiled loop of
`affine.kernels` on it, from its native entry when it has one. Importing this module
loads no compiler.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from bundler.codecs.kernels import Compiled, first_call, split_run

#: Values quantized per task of `quantize`.
CHUNK = 8192
#: Most rows per task of `minmax_rows` (their ranges and parameters are found together, in
#: loops across the rows, before the rows are quantized).
ROWS = 64
#: Below this many slices the MSE search spreads each slice's candidates over the threads.
FEW_SLICES = 64
#: Values the MSE search's float32 approximations sum in float32 (longer slices: their
#: blocks' sums added in float64), which bounds the approximations' slack whatever the
#: slice's length.
SUM_BLOCK = 4096

_MODULE = "bundler.codecs.affine.kernels"
_K = {
    name: Compiled(_MODULE, name)
    for name in (
        "quantize", "extremes", "minmax_rows", "mse_rows", "entropy_rows", "minmax_blocks_down",
        "mse_factors", "few_candidates", "few_errors", "few_contests", "few_exact",
        "few_winners", "entropy_thresholds",
    )
}  # fmt: skip


def _announced(fn: Any) -> Any:
    """`fn`, its first call's compilation announced as the affine kernels'."""
    return first_call(fn, "affine", threaded=False)


@_announced
def quantize(x: np.ndarray, scale: np.ndarray, zero: np.ndarray, qmin: int, qmax: int,
             div32: bool, out: np.ndarray) -> None:  # fmt: skip
    """out = clamp(rint(x / scale) + zero, qmin, qmax) of x (P, S, Q) float32 with scale,
    zero (Ps, S) float64, Ps 1 or P (see `kernels.quantize`)."""
    p_n, s_n, q_n = x.shape
    tasks = p_n * s_n * -(-q_n // CHUNK)
    split_run(_K["quantize"], tasks, x, scale, zero, qmin, qmax, div32, out, min_split=1)


@_announced
def extremes(bits: np.ndarray, lo: np.ndarray, hi: np.ndarray) -> int:
    """lo, hi = each row's least and greatest value of float32 rows given as int32 bits;
    how many rows held a NaN or an infinity."""
    rows, n = bits.shape
    least = max(1, 8 * CHUNK // max(1, n))  # rows a thread is given: 64k values at least
    return split_run(_K["extremes"], rows, bits, lo, hi, min_split=least)


@_announced
def minmax_rows(x: np.ndarray, *args: Any) -> int:
    """MinMax (or given ranges') calibration and quantization of each row of x (S, G) in
    one pass (see `kernels.minmax_rows` for the arguments after x); how many rows held a
    NaN or an infinity."""
    return _rows(_K["minmax_rows"], x, *args)


@_announced
def mse_rows(x: np.ndarray, bits: np.ndarray, coarse: np.ndarray, fine: np.ndarray, qmin: int,
             qmax: int, *args: Any) -> int:  # fmt: skip
    """`minmax_rows` with the MSE search's ranges (see `kernels.mse_rows`; its `shortcuts`
    are derived here)."""
    terms = shortcuts(x.shape[1], qmin, qmax)
    return _rows(_K["mse_rows"], x, bits, coarse, fine, terms, qmin, qmax, *args)


@_announced
def entropy_rows(x: np.ndarray, *args: Any) -> int:
    """`minmax_rows` with the entropy (KL) ranges (see `kernels.entropy_rows` for the
    arguments after x)."""
    return _rows(_K["entropy_rows"], x, *args)


def _rows(kernel: Compiled, x: np.ndarray, *args: Any) -> int:
    """`kernel` of the tasks of rows of x (S, G): the sum of what they return."""
    s_n, q_n = x.shape
    # long rows (channels) fewer a task, so that a few of them still spread over threads
    per = min(ROWS, max(1, CHUNK // max(1, q_n)))
    return split_run(kernel, -(-s_n // per), x, *args, per, min_split=1)


@_announced
def minmax_blocks_down(x: np.ndarray, bits: np.ndarray, size: int, *args: Any) -> int:
    """MinMax blocks of `size` rows down each column of x (K, N) (see
    `kernels.minmax_blocks_down`); how many blocks held a NaN or an infinity."""
    scale = args[-2]
    return split_run(_K["minmax_blocks_down"], scale.shape[0], x, bits, size, *args, min_split=1)


@_announced
def mse_factors(slices: np.ndarray, lo0: np.ndarray, hi0: np.ndarray, qmin: int, qmax: int,
                symmetric: bool, extreme: bool, coarse: np.ndarray, fine: np.ndarray, kind: int,
                tiny: float, half_table: np.ndarray, out: np.ndarray) -> None:  # fmt: skip
    """out[i] = the factor the MSE search shrinks slice i's range [lo0, hi0] by (see
    `kernels.mse_factors`)."""
    s_n, n = slices.shape
    terms = shortcuts(n, qmin, qmax)
    common = (qmin, qmax, symmetric, extreme)
    if s_n >= FEW_SLICES:
        split_run(_K["mse_factors"], s_n, slices, lo0, hi0, *common, coarse, fine, kind, tiny,
                  half_table, terms, out, min_split=1)  # fmt: skip
        return
    # few slices (a tensor, a few channels): their candidates over the threads
    cand = np.empty((s_n, 5, max(len(coarse), len(fine) + 1)))
    best = np.empty(s_n, dtype=np.int64)
    won = np.empty(s_n)
    widest = np.empty(s_n)
    for round_ in range(2):
        k_n = len(coarse) if round_ == 0 else len(fine) + 1
        split_run(_K["few_candidates"], s_n, round_, coarse, fine, lo0, hi0, *common, kind,
                  tiny, half_table, out, cand, min_split=s_n)  # fmt: skip
        split_run(_K["few_errors"], s_n * k_n, slices, lo0, hi0, qmin, qmax, cand, k_n,
                  min_split=1)  # fmt: skip
        split_run(_K["few_contests"], s_n, lo0, hi0, cand, k_n, round_, won, widest, terms, best,
                  min_split=s_n)  # fmt: skip
        split_run(_K["few_exact"], s_n * k_n, slices, cand, k_n, best, qmin, qmax, min_split=1)
        split_run(_K["few_winners"], s_n, cand, k_n, best, out, won, min_split=s_n)


def shortcuts(n: int, qmin: int, qmax: int) -> np.ndarray:
    """The MSE search's shortcut terms for slices of n values with codes qmin..qmax:
    (margin, pruning bound, and the additive terms of the contest and of the pruning per
    squared scale of the slice's widest candidate).

    The approximations (`kernels._approximate_error`) may fuse the decoding product into
    the subtraction and the square into the sum: per value, an error that differs from
    the exact one by at most eta = 2^-24 (qmax - qmin) |scale| (1 + 2^-22) besides the
    relative roundings `slack` s counts. Squared, (x + eta)^2 lies within (1 + s/32) x^2
    + (1 + 32/s) eta^2 and (1 - s/32) x^2 - 32 eta^2 / s, so an approximation lies within
    a relative 1.05s of the exact error plus or minus B = (36n + 64) eta^2 / s. Then:
    - a candidate whose approximation exceeds the least one's times 1 + 4 * 1.05s, plus
      (2 + 4 * 1.05s) B, errs more, exactly ((1 + x) / (1 - x) <= 1 + 4x for x <= 1/2);
    - a candidate whose extremes' squared errors (`kernels._ends`) exceed that limit plus
      B, times 1 + 2.4s, has an approximation over it (it is at least (1 - 1.2s) times
      them, less 64 eta^2 / s).
    Both hold for a slack up to 1/10 (`slack` is at most 0.094)."""
    s = slack(n, qmax - qmin + 1)
    margin = 1.0 + 4 * 1.05 * s
    eta = 2.0**-24 * (qmax - qmin) * (1.0 + 2.0**-22)
    b = (36 * n + 64) * eta * eta / s * (1.0 + 2.0**-30)
    contest = (1.0 + margin) * b
    grow = 1.0 + 2.4 * s
    return np.array([margin, margin * grow, contest, (contest + b) * grow])


def slack(n: int, levels: int) -> float:
    """The relative slack of the MSE search's float32 approximation of the error of a slice
    of `n` values with `levels` codes (see `kernels`: float32 sums of blocks of SUM_BLOCK
    values, added in float64). At most 0.094 for 16-bit codes, the widest a scheme has:
    the search's shortcuts are proved for any slack up to 1/10 (`shortcuts`)."""
    return ((min(n, SUM_BLOCK) + 4) + 24 * levels) * 2.0**-24 + n * 2.0**-53


@_announced
def entropy_thresholds(slices: np.ndarray, amax: np.ndarray, *args: Any) -> None:
    """out[i] = slice i's TensorRT-style KL threshold (see `kernels.entropy_thresholds`)."""
    split_run(_K["entropy_thresholds"], slices.shape[0], slices, amax, *args, min_split=1)
