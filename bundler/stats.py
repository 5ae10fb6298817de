"""Error statistics between an original tensor and its decoded approximation."""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from bundler.codecs.kernels import Compiled, first_call, split_run
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


@dataclass(frozen=True)
class _Sums:
    sq_err: float
    abs_err: float
    max_err: float
    dot: float
    sq_a: float
    sq_b: float


def error_stats(
    original: Any, decoded: Any, encoded_nbytes: int | None = None, *, exact: bool = False
) -> ErrorStats:
    """RMSE, max and mean absolute error, cosine similarity, SNR (dB) and compression ratio.

    Sums are taken in float64 by a compiled kernel; with `exact` they are exactly rounded
    (`math.fsum` of single IEEE operations), the same on every machine whatever its SIMD
    width or thread count. Cosine is 1 when both tensors are all zero and 0 when only one
    is; SNR is +inf for an exact reconstruction.
    """
    a, b = np.asarray(original), np.asarray(decoded)
    if a.shape != b.shape:
        raise ShapeError(f"cannot compare shapes {a.shape} and {b.shape}")
    sums = _exact_sums(a, b) if exact else _kernel_sums(_flat(a), _flat(b))
    n = a.size
    return ErrorStats(
        n=n,
        rmse=math.sqrt(sums.sq_err / n) if n else 0.0,
        max_abs=sums.max_err,
        mean_abs=sums.abs_err / n if n else 0.0,
        cosine=_cosine(sums.dot, sums.sq_a, sums.sq_b, exact),
        snr_db=_snr_db(sums.sq_a, sums.sq_err),
        compression_ratio=(n * 4 / encoded_nbytes) if encoded_nbytes else None,
    )


def exact_error_stats(original: Any, decoded: Any, encoded_nbytes: int | None = None) -> ErrorStats:
    """`error_stats` of the values in order (shapes may differ, counts may not) with exactly
    rounded sums: what recipes record."""
    a, b = np.ravel(original), np.ravel(decoded)
    if a.shape != b.shape:
        raise ShapeError(f"cannot compare {a.size} values with {b.size}")
    return error_stats(a, b, encoded_nbytes, exact=True)


#: Values per block of the compiled sums (their partition, whatever the thread count).
BLOCK = 1 << 16


def _kernel_sums(a: np.ndarray, b: np.ndarray) -> _Sums:
    parts = _partial_sums(a, b)
    sq_err, abs_err, dot, sq_a, sq_b = (float(parts[:, i].sum()) for i in (0, 1, 3, 4, 5))
    return _Sums(sq_err, abs_err, float(parts[:, 2].max(initial=0.0)), dot, sq_a, sq_b)


def _sums_by_block(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Per block of BLOCK values: the six sums of `stats_kernel.partial_sums`, on the
    threads in effect."""
    out = np.zeros((-(-a.size // BLOCK), 6), np.float64)
    split_run(_PARTIAL_SUMS, out.shape[0], a, b, out, min_split=1)
    return out


_PARTIAL_SUMS = Compiled("bundler.stats_kernel", "partial_sums")
_partial_sums = first_call(_sums_by_block, "error statistics", threaded=False)

#: Values converted to Python floats at a time by the exact sums (bounds their memory).
_EXACT_CHUNK = 1 << 16


def _exact_sums(a: np.ndarray, b: np.ndarray) -> _Sums:
    a, b = a.reshape(-1), b.reshape(-1)

    def pieces(term: Callable[[np.ndarray, np.ndarray], np.ndarray]) -> Iterator[np.ndarray]:
        for i in range(0, a.size, _EXACT_CHUNK):
            x, y = (v[i : i + _EXACT_CHUNK].astype(np.float64) for v in (a, b))
            yield term(x, y)

    def fsum(term: Callable[[np.ndarray, np.ndarray], np.ndarray]) -> float:
        # math.fsum is exactly rounded over everything it is given, however it arrives
        return math.fsum(itertools.chain.from_iterable(p.tolist() for p in pieces(term)))

    return _Sums(
        sq_err=fsum(lambda x, y: (x - y) * (x - y)),
        abs_err=fsum(lambda x, y: np.abs(x - y)),
        max_err=max((float(p.max()) for p in pieces(lambda x, y: np.abs(x - y))), default=0.0),
        dot=fsum(lambda x, y: x * y),
        sq_a=fsum(lambda x, y: x * x),
        sq_b=fsum(lambda x, y: y * y),
    )


def _flat(x: np.ndarray) -> np.ndarray:
    x = x.reshape(-1)
    if x.dtype in (np.float32, np.float64):
        return x
    return x.astype(np.float64)


def _cosine(dot: float, sq_a: float, sq_b: float, exact: bool) -> float:
    if sq_a == 0.0 and sq_b == 0.0:
        return 1.0
    if sq_a == 0.0 or sq_b == 0.0:
        return 0.0
    if exact:  # each norm rounded on its own: no overflow of sq_a * sq_b
        return dot / math.sqrt(sq_a) / math.sqrt(sq_b)
    return dot / math.sqrt(sq_a * sq_b)


def _snr_db(signal: float, noise: float) -> float:
    if noise == 0.0:
        return math.inf
    if signal == 0.0:
        return -math.inf
    return 10.0 * math.log10(signal / noise)
