"""Batch quantization: every vector gets its own result, a bad one fails alone.

A vector with a NaN or infinity, no values, another length than the batch's, or a range
float32 cannot hold gets its typed error (with `.index` set to its position); all others
are quantized together, as one matrix.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from bundler.codecs.vectors.schemes import (
    QuantizedVector,
    QuantizedVectors,
    Scheme,
    quantize_matrix,
    range_overflows,
)
from bundler.errors import EncodingFailed, InvalidDimension, VectorError


@dataclass
class BatchStats:
    """Counts and timing of one batch."""

    total: int
    succeeded: int
    failed: int
    seconds: float

    @property
    def vectors_per_second(self) -> float:
        return self.total / self.seconds if self.seconds > 0 else float("inf")

    def as_dict(self) -> dict[str, Any]:
        return {**asdict(self), "vectors_per_second": self.vectors_per_second}


@dataclass
class BatchResult:
    """Per-vector outcomes: `results[i]` is a QuantizedVector or the VectorError of vector i.

    `quantized` holds the successful vectors as one collection, in order; `ok` are their
    indices in the input.
    """

    scheme: Scheme
    dim: int
    quantized: QuantizedVectors | None
    ok: np.ndarray
    errors: dict[int, VectorError]
    stats: BatchStats = field(repr=False)

    @property
    def results(self) -> list[QuantizedVector | VectorError]:
        out: list[QuantizedVector | VectorError] = [None] * self.stats.total  # type: ignore[list-item]
        for k, i in enumerate(self.ok.tolist()):
            out[i] = self.quantized[k]  # type: ignore[index]
        for i, err in self.errors.items():
            out[i] = err
        return out


def _failed(err: VectorError, index: int) -> VectorError:
    err.index = index
    return err


def quantize_batch(
    vectors: np.ndarray | Sequence[Any], scheme: Scheme | str, dim: int | None = None
) -> BatchResult:
    """Quantize each vector of `vectors` (a matrix or a sequence of 1-D vectors).

    The batch dimension is `dim`, else the most common length among the vectors.
    """
    scheme = Scheme.parse(scheme)
    start = time.perf_counter()
    rows = [np.asarray(v) for v in vectors] if not isinstance(vectors, np.ndarray) else None
    errors: dict[int, VectorError] = {}
    if rows is None:
        matrix = np.asarray(vectors)
        if matrix.ndim != 2:
            raise InvalidDimension(f"a batch is an (N, D) matrix, got shape {matrix.shape}")
        dim = matrix.shape[1] if dim is None else dim
        if matrix.shape[1] != dim or dim == 0:
            raise InvalidDimension(f"vectors of {matrix.shape[1]} values, batch dimension {dim}")
        matrix = np.ascontiguousarray(matrix, np.float32)
        total = len(matrix)
    else:
        total = len(rows)
        if dim is None:
            lengths = [r.size for r in rows if r.ndim == 1 and r.size]
            dim = int(np.bincount(lengths).argmax()) if lengths else 0
        for i, r in enumerate(rows):
            if r.ndim != 1 or r.size == 0:
                errors[i] = _failed(InvalidDimension(f"vector {i}: shape {r.shape}"), i)
            elif r.size != dim:
                errors[i] = _failed(
                    InvalidDimension(f"vector {i}: {r.size} values, batch dimension {dim}"), i
                )
            elif r.dtype.kind not in "fiub":
                errors[i] = _failed(EncodingFailed(f"vector {i}: {r.dtype} is not numeric"), i)
        good = [i for i in range(total) if i not in errors]
        matrix = np.empty((len(good), max(dim, 1)), np.float32)
        for k, i in enumerate(good):
            matrix[k] = rows[i]
    index = np.array([i for i in range(total) if i not in errors], np.int64)
    bad = ~np.isfinite(matrix).all(axis=1)
    if scheme in (Scheme.QINT8, Scheme.QINT4):
        bad |= range_overflows(np.where(np.isfinite(matrix), matrix, 0))
    for k in np.flatnonzero(bad).tolist():
        i = int(index[k])
        row = matrix[k]
        if np.isfinite(row).all():
            problem = f"vector {i}: max - min overflows float32; {scheme.value} cannot hold it"
        else:
            col = int(np.flatnonzero(~np.isfinite(row))[0])
            problem = f"vector {i}: value {col} is {row[col]}; vectors must be finite"
        errors[i] = _failed(EncodingFailed(problem), i)
    keep = ~bad
    matrix, index = matrix[keep], index[keep]
    quantized = quantize_matrix(np.ascontiguousarray(matrix), scheme) if dim else None
    seconds = time.perf_counter() - start
    stats = BatchStats(total, len(index), len(errors), seconds)
    return BatchResult(scheme, dim, quantized, index, dict(sorted(errors.items())), stats)
