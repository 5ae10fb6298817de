"""Calibration methods: each chooses the range [lo, hi] of every slice (a tensor, a channel
or a group) that the affine codec then maps onto its integer range.

- MinMax: the slice's extremes.
- Percentile(lower, upper), in percent: numpy's linear-interpolation percentiles.
- MeanStd(k): mean +- k standard deviations, never beyond the extremes.
- MSE: of the MinMax range (widened to 0) shrunk by factors from 1.0 to 0.2 (21 coarse
  steps of 0.04, then 14 steps of 0.005 around the best), the one whose quantization gives
  the least sum of squared errors on that very slice. Candidates are ranked by a fast
  float32 error; those its proven error bounds leave able to win are then compared exactly
  (float64, decoded as the codec decodes), so MSE is never worse than MinMax. (Work whose
  outcome is provable from error bounds is skipped; the choices are the same: see the
  kernels and `runs.shortcuts`.)
- Entropy: TensorRT's KL calibration over a histogram of |x| (bins: the larger of 4 per
  positive code and the slice length, at most 2048; 64 evenly spaced thresholds, fewer for
  slices shorter than 4 values per positive code: 16 * length / codes, at least 16), giving
  +-threshold clipped to the extremes. At more than 10 bits the histogram cannot resolve
  the codes and the range is MinMax's.

A slice whose values are all equal keeps that one value as its range under every method.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any, Protocol

import ml_dtypes
import numpy as np

from bundler.errors import UsageError


class Quantizer(Protocol):
    """What a range search needs to know of the codec (an affine `Scheme`)."""

    bits: int
    symmetric: bool
    scale_dtype: str
    scale_rule: str

    @property
    def qmin(self) -> int: ...

    @property
    def qmax(self) -> int: ...


class Method:
    """A calibration method: `ranges(slices, lo, hi, quantizer)` -> (lo, hi) per slice.
    Subclasses are dataclasses whose fields are the method's parameters."""

    #: the method's name in `config()` dicts
    name = ""

    @property
    def token(self) -> str:
        """The short string form (`method_from` reads it back)."""
        return self.name

    def config(self) -> dict[str, Any]:
        """The method as a dict: its name and parameters (`method_from` reads it back)."""
        return {"method": self.name, **asdict(self)}

    def ranges(
        self, slices: np.ndarray, lo: np.ndarray, hi: np.ndarray, quantizer: Quantizer
    ) -> tuple[np.ndarray, np.ndarray]:
        raise NotImplementedError


@dataclass(frozen=True)
class MinMax(Method):
    """The extremes of each slice."""

    name = "minmax"

    def ranges(self, slices, lo, hi, quantizer):
        return lo, hi


@dataclass(frozen=True)
class Percentile(Method):
    """The lower-th and upper-th percentiles of each slice (99.9 clips the top 0.1%)."""

    name = "percentile"
    lower: float = 0.1
    upper: float = 99.9

    def __post_init__(self) -> None:
        if not 0 <= self.lower < self.upper <= 100:
            raise UsageError(
                f"percentiles must satisfy 0 <= lower < upper <= 100, got {self.lower}, "
                f"{self.upper}"
            )

    @property
    def token(self) -> str:
        if np.isclose(self.lower, 100 - self.upper):
            return f"p{self.upper:g}"
        return f"p{self.lower:g}-{self.upper:g}"

    def ranges(self, slices, lo, hi, quantizer):
        p = np.percentile(slices.astype(np.float64), [self.lower, self.upper], axis=1)
        return p[0].reshape(lo.shape), p[1].reshape(hi.shape)


@dataclass(frozen=True)
class MeanStd(Method):
    """mean +- k standard deviations, clipped to the slice's extremes."""

    name = "meanstd"
    k: float = 3.0

    def __post_init__(self) -> None:
        if not self.k > 0:
            raise UsageError(f"MeanStd needs k > 0, got {self.k}")

    @property
    def token(self) -> str:
        return f"meanstd{self.k:g}"

    def ranges(self, slices, lo, hi, quantizer):
        mean = slices.mean(axis=1, dtype=np.float64).reshape(lo.shape)
        std = slices.std(axis=1, dtype=np.float64).reshape(lo.shape)
        return np.maximum(lo, mean - self.k * std), np.minimum(hi, mean + self.k * std)


#: MSE search: coarse shrink factors 1.0, 0.96, ... 0.2, then +-7 steps of 0.005 around the best.
_COARSE = 1.0 - 0.04 * np.arange(21)
_FINE = 0.005 * np.array([j for j in range(-7, 8) if j])


@dataclass(frozen=True)
class MSE(Method):
    """The shrunk MinMax range of least squared reconstruction error on the slice."""

    name = "mse"
    #: The coarse shrink factors and the fine steps around the best of them.
    GRID = (_COARSE, _FINE)

    def ranges(self, slices, lo, hi, quantizer):
        from bundler.codecs.affine import runs
        from bundler.codecs.affine.arithmetic import SCALE_DTYPES, SCALE_NUMPY, parameters
        from bundler.codecs.halftable import HALF_TO_F32

        shape = lo.shape
        lo, hi = lo.reshape(-1), hi.reshape(-1)
        lo0, hi0 = np.minimum(lo, 0.0), np.maximum(hi, 0.0)
        q = quantizer
        # MinMax's scales (the widest candidates) fit the scale dtype, or this says which not:
        # the widest of them is the slice's of widest span (symmetric: of largest magnitude)
        span = np.maximum(-lo0, hi0) if q.symmetric else hi0 - lo0
        at = slice(int(np.argmax(span)), int(np.argmax(span)) + 1)
        parameters(lo0[at], hi0[at], q.qmin, q.qmax, q.symmetric, q.scale_dtype, q.scale_rule)
        kind = SCALE_DTYPES.index(q.scale_dtype)
        tiny = float(ml_dtypes.finfo(SCALE_NUMPY[q.scale_dtype]).smallest_subnormal)
        best = np.empty(len(lo), dtype=np.float64)
        for at in range(0, len(lo), _SLICES_PER_CALL):
            part = slice(at, at + _SLICES_PER_CALL)
            runs.mse_factors(
                slices[part], lo0[part], hi0[part], q.qmin, q.qmax, q.symmetric,
                q.scale_rule == "extreme", *self.GRID, kind, tiny, HALF_TO_F32,
                best[part],
            )  # fmt: skip
        constant = lo == hi
        new_lo = np.where(constant, lo, lo0 * best)
        new_hi = np.where(constant, hi, hi0 * best)
        return new_lo.reshape(shape), new_hi.reshape(shape)


#: Slices searched per kernel call (bounds the search's working memory).
_SLICES_PER_CALL = 8192


#: Entropy search: the largest histogram, thresholds tried, and the widest codes it resolves.
MAX_BINS = 2048
CANDIDATES = 64
ENTROPY_MAX_BITS = 10


@dataclass(frozen=True)
class Entropy(Method):
    """TensorRT's KL-divergence threshold over a histogram of |x|."""

    name = "entropy"

    def ranges(self, slices, lo, hi, quantizer):
        search = self.search(quantizer, slices.shape[1])
        if search is None:
            return lo, hi
        from bundler.codecs.affine import runs

        amax = np.maximum(-lo, hi).reshape(-1).astype(np.float64)
        threshold = np.empty(len(amax), dtype=np.float64)
        runs.entropy_thresholds(slices, amax, *search, threshold)
        threshold = threshold.reshape(lo.shape)
        constant = lo == hi
        new_lo = np.where(constant, lo, np.maximum(lo, -threshold))
        new_hi = np.where(constant, hi, np.minimum(hi, threshold))
        return new_lo, new_hi

    @staticmethod
    def search(quantizer: Quantizer, length: int) -> tuple[Any, ...] | None:
        """The histogram search of slices of `length` values (`kernels.entropy_thresholds`):
        (levels, bins, candidate bin counts, the distinct bins per level of the candidates
        and which is each one's, log(0..length + 1)), the arguments of its kernels;
        None at more than ENTROPY_MAX_BITS (the range is MinMax's)."""
        if quantizer.bits > ENTROPY_MAX_BITS:
            return None
        levels = 1 << (quantizer.bits - 1)
        n_bins = min(MAX_BINS, max(4 * levels, 1 << max(0, (length - 1).bit_length())))
        # short slices (int8 groups) try fewer thresholds: 16 per code level of values
        n_candidates = min(CANDIDATES, n_bins - levels + 1, max(16, 16 * length // levels))
        if n_candidates == 1:
            cands = np.array([n_bins], dtype=np.int64)
        else:
            span = n_bins - levels
            cands = levels + (span * np.arange(n_candidates, dtype=np.int64)) // (n_candidates - 1)
        log_n = np.log(np.maximum(np.arange(length + 2, dtype=np.float64), 1.0))
        widths, which = np.unique(cands // levels, return_inverse=True)
        return levels, n_bins, cands, widths, which.astype(np.int64), log_n


_BY_NAME: dict[str, type[Method]] = {m.name: m for m in (MinMax, Percentile, MeanStd, MSE, Entropy)}


def method_from(spec: Any) -> Method:
    """A method from an instance, a `config()` dict, or a token (`minmax`, `p99.9`,
    `p1-99`, `meanstd3`, `mse`, `entropy`, `percentile`, `meanstd`)."""
    if isinstance(spec, Method):
        return spec
    if isinstance(spec, dict):
        params = dict(spec)
        name = params.pop("method", None)
        if name not in _BY_NAME:
            raise UsageError(f"unknown calibration method {name!r}; valid: {', '.join(_BY_NAME)}")
        try:
            return _BY_NAME[name](**params)
        except TypeError as e:
            raise UsageError(f"calibration {name}: {e}") from None
    if isinstance(spec, str):
        return _from_token(spec.strip().lower())
    raise UsageError(f"not a calibration method: {spec!r}")


def _from_token(token: str) -> Method:
    if token in _BY_NAME:
        return _BY_NAME[token]()
    try:
        if token.startswith("meanstd"):
            return MeanStd(float(token[7:]))
        if token.startswith("p"):
            body = token[1:]
            if "-" in body:
                low, high = body.split("-", 1)
                return Percentile(float(low), float(high))
            upper = float(body)
            return Percentile(round(100 - upper, 10), upper)
    except ValueError:
        pass
    raise UsageError(
        f"unknown calibration {token!r}; valid: minmax, p<upper>, p<lower>-<upper>, "
        "meanstd<k>, mse, entropy"
    )
