"""Error statistics between an original tensor and its decoded approximation."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from bundler.errors import ShapeError


@dataclass(frozen=True)
class ErrorStats:
    """How far `decoded` is from `original` (all figures over every value)."""

    n: int
    rmse: float
    max_abs: float
    mean_abs: float
    cosine: float
    snr_db: float
    #: original float32 bytes / encoded bytes (None when the encoded size is not given)
    compression_ratio: float | None

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def error_stats(original: Any, decoded: Any, encoded_nbytes: int | None = None) -> ErrorStats:
    """RMSE, max and mean absolute error, cosine similarity, SNR (dB) and compression ratio.

    Sums are taken in float64. Cosine is 1 when both tensors are all zero and 0 when only
    one is; SNR is +inf for an exact reconstruction.
    """
    a, b = np.asarray(original), np.asarray(decoded)
    if a.shape != b.shape:
        raise ShapeError(f"cannot compare shapes {a.shape} and {b.shape}")
    a, b = _flat(a), _flat(b)
    from bundler.stats_kernel import partial_sums

    parts = partial_sums(a, b)
    sq_err, abs_err, dot, sq_a, sq_b = (float(parts[:, i].sum()) for i in (0, 1, 3, 4, 5))
    max_err = float(parts[:, 2].max(initial=0.0))
    n = a.size
    return ErrorStats(
        n=n,
        rmse=math.sqrt(sq_err / n) if n else 0.0,
        max_abs=max_err,
        mean_abs=abs_err / n if n else 0.0,
        cosine=_cosine(dot, sq_a, sq_b),
        snr_db=_snr_db(sq_a, sq_err),
        compression_ratio=(n * 4 / encoded_nbytes) if encoded_nbytes else None,
    )


def _flat(x: np.ndarray) -> np.ndarray:
    x = x.reshape(-1)
    if x.dtype in (np.float32, np.float64):
        return x
    return x.astype(np.float64)


def _cosine(dot: float, sq_a: float, sq_b: float) -> float:
    if sq_a == 0.0 and sq_b == 0.0:
        return 1.0
    if sq_a == 0.0 or sq_b == 0.0:
        return 0.0
    return dot / math.sqrt(sq_a * sq_b)


def _snr_db(signal: float, noise: float) -> float:
    if noise == 0.0:
        return math.inf
    if signal == 0.0:
        return -math.inf
    return 10.0 * math.log10(signal / noise)
