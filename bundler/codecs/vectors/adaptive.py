"""Choosing the scheme: lnmp-quant's four accuracy targets, and a cosine target met per
vector (the cheapest scheme that keeps each vector's cosine to its original at or above the
target) or per collection (the cheapest single scheme whose worst or mean cosine meets it).
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import Any

import numpy as np

from bundler.codecs.vectors.schemes import (
    BY_SIZE,
    QuantizedVector,
    QuantizedVectors,
    Scheme,
    as_matrix,
    check_finite,
    cosine,
    dequantize,
    quantize,
    quantize_matrix,
)
from bundler.errors import UsageError


class AccuracyTarget(enum.Enum):
    """lnmp-quant's targets and the scheme each one picks."""

    MAXIMUM = "maximum"
    HIGH = "high"
    BALANCED = "balanced"
    COMPACT = "compact"

    @property
    def scheme(self) -> Scheme:
        return {
            AccuracyTarget.MAXIMUM: Scheme.FP16,
            AccuracyTarget.HIGH: Scheme.QINT8,
            AccuracyTarget.BALANCED: Scheme.QINT4,
            AccuracyTarget.COMPACT: Scheme.BINARY,
        }[self]


def quantize_adaptive(x: Any, target: AccuracyTarget | str) -> QuantizedVector | QuantizedVectors:
    """lnmp-quant's `quantize_adaptive`: the scheme of the accuracy target."""
    if not isinstance(target, AccuracyTarget):
        try:
            target = AccuracyTarget(str(target).lower())
        except ValueError:
            valid = ", ".join(t.value for t in AccuracyTarget)
            raise UsageError(f"unknown accuracy target {target!r}; valid: {valid}") from None
    return quantize(x, target.scheme)


@dataclass(eq=False)
class MixedVectors:
    """A collection whose vectors may use different schemes.

    `schemes[i]` is vector i's scheme code; `groups[scheme]` holds that scheme's vectors in
    input order, `rows[scheme]` their indices in the collection.
    """

    dim: int
    schemes: np.ndarray
    groups: dict[Scheme, QuantizedVectors]
    rows: dict[Scheme, np.ndarray]

    def __len__(self) -> int:
        return len(self.schemes)

    def dequantize(self) -> np.ndarray:
        out = np.empty((len(self), self.dim), np.float32)
        for scheme, group in self.groups.items():
            out[self.rows[scheme]] = dequantize(group)
        return out

    def data_size(self) -> int:
        return sum(g.data_size() for g in self.groups.values())

    def stored_size(self) -> int:
        """Data plus scale and min (4 bytes each) and one scheme byte per vector."""
        return sum(g.stored_size() for g in self.groups.values()) + len(self)

    def mix(self) -> dict[str, int]:
        """How many vectors each scheme holds."""
        return {s.value: len(self.groups[s]) if s in self.groups else 0 for s in Scheme}


@dataclass
class AdaptiveReport:
    """What the adaptive choice did: the mix, the cosines reached and the bytes saved."""

    target_cosine: float
    per: str
    mix: dict[str, int]
    cosines: np.ndarray
    missed: int
    float32_bytes: int
    stored_bytes: int

    @property
    def bytes_saved(self) -> int:
        return self.float32_bytes - self.stored_bytes

    def as_dict(self) -> dict[str, Any]:
        return {
            "target_cosine": self.target_cosine,
            "per": self.per,
            "mix": self.mix,
            "mean_cosine": float(self.cosines.mean()) if self.cosines.size else None,
            "min_cosine": float(self.cosines.min()) if self.cosines.size else None,
            "missed_target": self.missed,
            "float32_bytes": self.float32_bytes,
            "stored_bytes": self.stored_bytes,
            "bytes_saved": self.bytes_saved,
        }


def quantize_to_target(
    x: Any, target_cosine: float = 0.99, per: str = "vector", statistic: str = "min"
) -> tuple[MixedVectors, AdaptiveReport]:
    """The cheapest scheme meeting `target_cosine`, chosen per vector or per collection.

    Per vector, every vector gets the most compact scheme whose reconstruction keeps its
    cosine to the original >= target (FP16 when none does: those are counted as missed).
    Per collection, one scheme for all: the most compact whose `statistic` ("min" or
    "mean") cosine meets the target.
    """
    if not 0.0 < target_cosine <= 1.0:
        raise UsageError(f"target cosine must be in (0, 1], got {target_cosine}")
    if per not in ("vector", "collection") or statistic not in ("min", "mean"):
        raise UsageError("per is 'vector' or 'collection'; statistic is 'min' or 'mean'")
    x = as_matrix(x)
    check_finite(x)
    n, dim = x.shape
    chosen = np.full(n, -1, np.int64)
    cos = np.zeros(n)
    pending = np.arange(n)
    for scheme in BY_SIZE:
        if not pending.size:
            break
        last = scheme == BY_SIZE[-1]
        q = quantize_matrix(np.ascontiguousarray(x[pending]), scheme)
        c = cosine(x[pending], dequantize(q))
        if per == "vector":
            meets = (c >= target_cosine) | last
        else:
            value = c.min() if statistic == "min" else c.mean()
            meets = np.full(len(pending), bool(value >= target_cosine or last))
        chosen[pending[meets]] = scheme.code
        cos[pending[meets]] = c[meets]
        pending = pending[~meets]
    groups, rows = {}, {}
    for scheme in Scheme:
        idx = np.flatnonzero(chosen == scheme.code)
        if idx.size:
            rows[scheme] = idx
            groups[scheme] = quantize_matrix(np.ascontiguousarray(x[idx]), scheme)
    mixed = MixedVectors(dim, chosen.astype(np.uint8), groups, rows)
    report = AdaptiveReport(
        float(target_cosine),
        per,
        mixed.mix(),
        cos,
        int((cos < target_cosine).sum()),
        4 * n * dim,
        mixed.stored_size(),
    )
    return mixed, report
