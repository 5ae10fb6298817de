"""Per-dimension ranges (`ranges="dimension"`): a named option beyond lnmp-quant's schemes.

lnmp-quant's QInt8 and QInt4 give every vector its own min and step, 8 bytes per vector,
and spend their levels on the vector's widest values. This option instead gives every
dimension one min and one step, trained once on the collection and stored with it (8 bytes
per dimension, as faiss's scalar quantizers store theirs), and no per-vector field: a
collection of N vectors of D values costs N x data bytes + 8 D. formats/vectors.md states
the arithmetic; in short, per dimension d with levels L (255 or 15):

    scale_d = (hi_d - lo_d) / L   (1 when the span is below 1e-10, lnmp-quant's step rule)
    inv_d   = 1 / scale_d
    u       = clamp(round((x_d - lo_d) * inv_d), 0, L), ties away from zero (lnmp's QInt4)
    x'_d    = float32(u) * scale_d + lo_d

stored as lnmp-quant stores the codes (QInt8: the signed byte u - 128; QInt4: two nibbles a
byte, the first in the high nibble). Both widths round to nearest: truncation's half-step
bias, harmless within one vector's own range, shifts each dimension by a different amount.

The range [lo_d, hi_d] is fitted by `fit`: "minmax" (the dimension's min and max over the
collection) or "mse" (of the ranges shrunk toward the dimension's median by the factors of
SHRINK, the one with the least squared reconstruction error of the collection's values,
the widest on ties). Defaults: QInt8 minmax, QInt4 mse (clipping the rare extreme values
pays at 16 levels, not at 256: measured on MiniLM's and SmolLM2's token embeddings).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from bundler.codecs.vectors.schemes import Scheme, as_matrix, check_finite
from bundler.errors import DataCorrupted, InvalidDimension, InvalidScheme, UsageError

#: Schemes the option applies to, and their levels.
LEVELS = {Scheme.QINT8: 255, Scheme.QINT4: 15}
FITS = ("minmax", "mse")
DEFAULT_FIT = {Scheme.QINT8: "minmax", Scheme.QINT4: "mse"}
#: Candidate ranges of the "mse" fit: [med + f (min - med), med + f (max - med)].
SHRINK = (1.0, 0.9, 0.8, 0.7, 0.6, 0.5, 0.45, 0.4, 0.35, 0.3)
#: Rows handled at once (bounds temporary memory).
BLOCK_ROWS = 4096

_TINY = np.float32(1e-10)
_HALF = np.float32(0.5)


def _scheme(scheme: Scheme | str) -> Scheme:
    s = Scheme.parse(scheme)
    if s not in LEVELS:
        raise InvalidScheme(f"per-dimension ranges apply to qint8 and qint4, not {s.value}")
    return s


@dataclass(eq=False)
class DimensionRanges:
    """One min and step per dimension, for one scheme."""

    scheme: Scheme
    scale: np.ndarray  # (D,) float32
    min: np.ndarray  # (D,) float32
    fit: str = "minmax"

    def __post_init__(self) -> None:
        self.scheme = _scheme(self.scheme)
        self.scale = np.ascontiguousarray(self.scale, dtype=np.float32).reshape(-1)
        self.min = np.ascontiguousarray(self.min, dtype=np.float32).reshape(-1)
        if self.scale.shape != self.min.shape or not self.scale.size:
            raise DataCorrupted(
                None,
                None,
                f"per-dimension ranges need one scale and one min per dimension; got "
                f"{self.scale.size} scales and {self.min.size} mins",
            )
        if not (np.isfinite(self.scale).all() and np.isfinite(self.min).all()):
            raise DataCorrupted(None, None, "a per-dimension scale or min is not finite")

    @property
    def dim(self) -> int:
        return int(self.scale.size)

    def stored_size(self) -> int:
        """Bytes of the ranges: a float32 scale and min per dimension."""
        return 8 * self.dim


def _step(lo: np.ndarray, hi: np.ndarray, levels: int) -> tuple[np.ndarray, np.ndarray]:
    """lnmp-quant's step and its inverse, per dimension, in float32."""
    span = (hi - lo).astype(np.float32)
    scale = np.where(np.abs(span) < _TINY, np.float32(1), span / np.float32(levels))
    scale = scale.astype(np.float32)
    inv = np.where(np.abs(scale) > _TINY, np.float32(1) / scale, np.float32(1))
    return scale, inv.astype(np.float32)


def _codes(x: np.ndarray, lo: np.ndarray, inv: np.ndarray, levels: int) -> np.ndarray:
    """u = clamp(round half away from zero of (x - lo) * inv, 0, levels), as uint8."""
    n = (x - lo) * inv  # float32, two roundings
    t = np.trunc(n)
    r = t + (n - t >= _HALF)  # n - t is exact; negative n clamps to 0 below
    return np.clip(r, 0, levels).astype(np.uint8)


def _fit_mse(x: np.ndarray, levels: int) -> tuple[np.ndarray, np.ndarray]:
    lo0, hi0 = x.min(axis=0), x.max(axis=0)
    med = np.median(x, axis=0).astype(np.float32)
    best_err = best_lo = best_hi = None
    for f in SHRINK:
        f32 = np.float32(f)
        lo = (med + f32 * (lo0 - med)).astype(np.float32)
        hi = (med + f32 * (hi0 - med)).astype(np.float32)
        scale, inv = _step(lo, hi, levels)
        err = np.zeros(x.shape[1])
        for start in range(0, len(x), BLOCK_ROWS):
            block = x[start : start + BLOCK_ROWS]
            u = _codes(block, lo, inv, levels)
            d = (u.astype(np.float32) * scale + lo).astype(np.float64) - block
            err += np.einsum("ij,ij->j", d, d)
        if best_err is None:
            best_err, best_lo, best_hi = err, lo, hi
        else:
            better = err < best_err
            best_err = np.where(better, err, best_err)
            best_lo = np.where(better, lo, best_lo)
            best_hi = np.where(better, hi, best_hi)
    return best_lo, best_hi


def fit_ranges(x: Any, scheme: Scheme | str, fit: str | None = None) -> DimensionRanges:
    """Per-dimension ranges of `scheme` trained on the (N, D) collection x."""
    scheme = _scheme(scheme)
    fit = fit or DEFAULT_FIT[scheme]
    if fit not in FITS:
        raise UsageError(f"fit must be one of {', '.join(FITS)}, got {fit!r}")
    x = as_matrix(x)
    check_finite(x)
    levels = LEVELS[scheme]
    with np.errstate(over="ignore"):
        if not np.isfinite(x.max(axis=0) - x.min(axis=0)).all():
            raise UsageError("a dimension's max - min overflows float32; use fp16")
    if fit == "minmax":
        lo, hi = x.min(axis=0), x.max(axis=0)
    else:
        lo, hi = _fit_mse(x, levels)
    scale, _ = _step(lo, hi, levels)
    return DimensionRanges(scheme, scale, lo, fit)


@dataclass(eq=False)
class DimensionVectors:
    """N vectors coded with per-dimension ranges: `data` rows packed as the scheme's."""

    ranges: DimensionRanges
    data: np.ndarray  # (N, data_size) uint8

    def __post_init__(self) -> None:
        data = np.asarray(self.data)
        self.data = np.ascontiguousarray(data.view(np.uint8) if data.dtype != np.uint8 else data)
        row = self.scheme.data_size(self.dim)
        if self.data.ndim != 2 or self.data.shape[1] != row:
            raise DataCorrupted(
                None,
                None,
                f"{self.scheme.value} vectors of {self.dim} values need {row} data bytes each, "
                f"got shape {self.data.shape}",
            )

    @property
    def scheme(self) -> Scheme:
        return self.ranges.scheme

    @property
    def dim(self) -> int:
        return self.ranges.dim

    def __len__(self) -> int:
        return len(self.data)

    def data_size(self) -> int:
        return int(self.data.size)

    def stored_size(self) -> int:
        """Bytes of the codes plus the per-dimension ranges (no per-vector field)."""
        return self.data_size() + self.ranges.stored_size()

    def compression_ratio(self) -> float:
        return self.scheme.compression_ratio(self.dim)

    def take(self, rows: Any) -> DimensionVectors:
        return DimensionVectors(self.ranges, self.data[rows])

    def codes(self, start: int = 0, stop: int | None = None) -> np.ndarray:
        """The integer codes u (0..levels) of rows start:stop, uint8."""
        data = self.data[start:stop]
        if self.scheme == Scheme.QINT8:
            return (data.view(np.int8).astype(np.int16) + 128).astype(np.uint8)
        u = np.empty((len(data), 2 * data.shape[1]), np.uint8)
        u[:, 0::2] = data >> 4
        u[:, 1::2] = data & 15
        return u[:, : self.dim]

    def dequantize(self, out: np.ndarray | None = None) -> np.ndarray:
        """The (N, D) float32 reconstruction: float32(u) * scale_d + min_d."""
        if out is None:
            out = np.empty((len(self), self.dim), np.float32)
        for start in range(0, len(self), BLOCK_ROWS):
            stop = min(len(self), start + BLOCK_ROWS)
            u = self.codes(start, stop).astype(np.float32)
            np.add(u * self.ranges.scale, self.ranges.min, out=out[start:stop])
        return out


def _pack(u: np.ndarray, scheme: Scheme) -> np.ndarray:
    if scheme == Scheme.QINT8:
        return (u.astype(np.int16) - 128).astype(np.int8).view(np.uint8)
    if u.shape[1] % 2:
        u = np.concatenate([u, np.zeros((len(u), 1), np.uint8)], axis=1)
    return (u[:, 0::2] << 4) | u[:, 1::2]


def quantize_dims(
    x: Any, scheme: Scheme | str | None = None, ranges: DimensionRanges | None = None, **fit: Any
) -> DimensionVectors:
    """Code the (N, D) collection x with per-dimension ranges: `ranges` when given (e.g.
    trained on another sample), else fitted on x (`fit=` "minmax" or "mse")."""
    if ranges is None:
        if scheme is None:
            raise UsageError("give a scheme or trained ranges")
        ranges = fit_ranges(x, scheme, **fit)
    elif scheme is not None and _scheme(scheme) != ranges.scheme:
        raise UsageError(f"ranges are {ranges.scheme.value}, not {Scheme.parse(scheme).value}")
    x = as_matrix(x)
    if x.shape[1] != ranges.dim:
        raise InvalidDimension(f"vectors of {x.shape[1]} values, ranges of {ranges.dim}")
    check_finite(x)
    levels = LEVELS[ranges.scheme]
    with np.errstate(divide="ignore"):
        inv = np.where(np.abs(ranges.scale) > _TINY, np.float32(1) / ranges.scale, np.float32(1))
    inv = inv.astype(np.float32)
    data = np.empty((len(x), ranges.scheme.data_size(ranges.dim)), np.uint8)
    for start in range(0, len(x), BLOCK_ROWS):
        stop = min(len(x), start + BLOCK_ROWS)
        data[start:stop] = _pack(_codes(x[start:stop], ranges.min, inv, levels), ranges.scheme)
    return DimensionVectors(ranges, data)


__all__ = [
    "DEFAULT_FIT",
    "FITS",
    "DimensionRanges",
    "DimensionVectors",
    "fit_ranges",
    "quantize_dims",
]
