"""Search on the quantized form.

QInt8 / QInt4: a stored vector is x = scale * u + min with integer codes u (0..255 or
0..15), so q . x = scale * (q . u) + min * sum(q) and |x|^2 = scale^2 |u|^2 +
2 scale min sum(u) + dim min^2: scores come from products with the codes, a block at a
time, and the per-vector code sums computed once; no reconstruction is ever materialized.
Binary: Hamming distance between sign codes (the query is binarized the same way);
cosine of two ±1 vectors is 1 - 2 hamming / dim. FP16: products with the halves.

Top-k ties go to the lower index. Optional rescoring re-ranks the best `candidates` of
each query against higher-precision codes (or the float32 vectors).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from bundler.codecs.vectors.dimensions import DimensionVectors
from bundler.codecs.vectors.schemes import (
    QuantizedVectors,
    Scheme,
    as_matrix,
    compiled_kernels,
    quantize_matrix,
)
from bundler.errors import InvalidDimension, UsageError

#: Database vectors turned into code values per block (bounds the temporary memory).
BLOCK_ROWS = 8192
METRICS = ("cosine", "dot")


@dataclass(eq=False)
class CodeStats:
    """Per-vector sums of the integer codes, for scores computed on the codes."""

    code_sum: np.ndarray  # (N,) float64
    norm: np.ndarray  # (N,) float64, |reconstruction|


def _codes_block(q: QuantizedVectors, start: int, stop: int) -> np.ndarray:
    """The integer codes u of rows start:stop as float32 (exact: at most 255)."""
    data = q.data[start:stop]
    if q.scheme == Scheme.QINT8:
        return data.view(np.int8).astype(np.float32) + np.float32(128)
    if q.scheme == Scheme.QINT4:
        u = np.empty((len(data), 2 * data.shape[1]), np.float32)
        u[:, 0::2] = data >> 4
        u[:, 1::2] = data & 15
        return u[:, : q.dim]
    if q.scheme == Scheme.FP16:
        out = np.empty((len(data), q.dim), np.float32)
        compiled_kernels().f16_decode(data.view("<u2"), out)
        return out
    raise UsageError(f"{q.scheme.value} codes have no values to multiply; use hamming")


def _dimension_stats(q: DimensionVectors) -> CodeStats:
    """|x|^2 = sum_d (s_d u_d + m_d)^2 = u^2 . s^2 + 2 u . (s m) + |m|^2, from the codes."""
    s = q.ranges.scale.astype(np.float64)
    m = q.ranges.min.astype(np.float64)
    code_sum = np.empty(len(q))
    norm = np.empty(len(q))
    for start in range(0, len(q), BLOCK_ROWS):
        stop = min(len(q), start + BLOCK_ROWS)
        u = q.codes(start, stop).astype(np.float64)
        code_sum[start:stop] = u.sum(axis=1)
        sq = (u * u) @ (s * s) + 2 * (u @ (s * m)) + m @ m
        norm[start:stop] = np.sqrt(np.maximum(sq, 0.0))
    return CodeStats(code_sum, norm)


def code_stats(q: QuantizedVectors | DimensionVectors) -> CodeStats:
    """Code sums and reconstruction norms of every vector of `q`."""
    if isinstance(q, DimensionVectors):
        return _dimension_stats(q)
    n = len(q)
    code_sum = np.empty(n)
    norm = np.empty(n)
    for start in range(0, n, BLOCK_ROWS):
        stop = min(n, start + BLOCK_ROWS)
        u = _codes_block(q, start, stop).astype(np.float64)
        s = q.scale[start:stop].astype(np.float64)
        m = q.min[start:stop].astype(np.float64)
        if q.scheme == Scheme.FP16:
            code_sum[start:stop] = u.sum(axis=1)
            norm[start:stop] = np.sqrt(np.einsum("ij,ij->i", u, u))
            continue
        su = u.sum(axis=1)
        code_sum[start:stop] = su
        sq = s * s * np.einsum("ij,ij->i", u, u) + 2 * s * m * su + q.dim * m * m
        norm[start:stop] = np.sqrt(np.maximum(sq, 0.0))
    return CodeStats(code_sum, norm)


def _dimension_dots(qs: np.ndarray, q: DimensionVectors) -> np.ndarray:
    """q . x = (q * s) . u + q . m with per-dimension step s and min m, from the codes."""
    weighted = qs * q.ranges.scale
    offset = (qs.astype(np.float64) @ q.ranges.min.astype(np.float64)).astype(np.float32)
    out = np.empty((len(qs), len(q)), np.float32)
    for start in range(0, len(q), BLOCK_ROWS):
        stop = min(len(q), start + BLOCK_ROWS)
        out[:, start:stop] = weighted @ q.codes(start, stop).astype(np.float32).T
    out += offset[:, None]
    return out


def scores(
    queries: Any,
    q: QuantizedVectors | DimensionVectors,
    metric: str = "cosine",
    stats: CodeStats | None = None,
) -> np.ndarray:
    """(Q, N) similarity of float queries to the quantized vectors (higher is closer).

    QInt8/QInt4/FP16 (and per-dimension ranges): inner product or cosine of the float query
    with the vectors the codes stand for, computed from the codes. Binary: 1 - 2 * hamming /
    dim between the binarized queries and the codes (both metrics: a ±1 vector's cosine and
    its scaled inner product are the same ranking).
    """
    if metric not in METRICS:
        raise UsageError(f"metric must be one of {', '.join(METRICS)}, got {metric!r}")
    qs = as_matrix(queries, q.dim)
    if q.scheme == Scheme.BINARY:
        return 1.0 - 2.0 * hamming(quantize_matrix(qs, Scheme.BINARY), q) / q.dim
    stats = stats or code_stats(q)
    out = _dimension_dots(qs, q) if isinstance(q, DimensionVectors) else _vector_dots(qs, q)
    if metric == "cosine":
        qn = np.linalg.norm(qs.astype(np.float64), axis=1)
        with np.errstate(invalid="ignore", divide="ignore"):
            out /= np.outer(qn, stats.norm).astype(np.float32)
        np.nan_to_num(out, copy=False, nan=0.0, posinf=0.0, neginf=0.0)
    return out


def _vector_dots(qs: np.ndarray, q: QuantizedVectors) -> np.ndarray:
    """q . x = scale (q . u) + min sum(q) with each vector's scale and min, from the codes."""
    qsum = qs.astype(np.float64).sum(axis=1)
    out = np.empty((len(qs), len(q)), np.float32)
    for start in range(0, len(q), BLOCK_ROWS):
        stop = min(len(q), start + BLOCK_ROWS)
        dots = qs @ _codes_block(q, start, stop).T
        if q.scheme != Scheme.FP16:
            s = q.scale[start:stop]
            dots = dots * s + np.outer(qsum, q.min[start:stop]).astype(np.float32)
        out[:, start:stop] = dots
    return out


def hamming(a: QuantizedVectors, b: QuantizedVectors) -> np.ndarray:
    """(len(a), len(b)) Hamming distances between binary codes (padding bits are 0)."""
    if a.scheme != Scheme.BINARY or b.scheme != Scheme.BINARY or a.dim != b.dim:
        raise InvalidDimension("hamming needs binary codes of the same dimension")
    out = np.empty((len(a), len(b)), np.int32)
    for start in range(0, len(b), BLOCK_ROWS):
        block = b.data[start : start + BLOCK_ROWS]
        for i, row in enumerate(a.data):
            out[i, start : start + len(block)] = np.bitwise_count(block ^ row).sum(
                axis=1, dtype=np.int32
            )
    return out


def top_k(score: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Indices and scores of the k highest scores of each row; ties to the lower index."""
    k = min(k, score.shape[1])
    if k <= 0:
        raise UsageError(f"k must be positive, got {k}")
    part = np.argpartition(-score, k - 1, axis=1)[:, :k] if k < score.shape[1] else None
    if part is None:
        part = np.broadcast_to(np.arange(score.shape[1]), score.shape)
    # partition picks any of equal scores at the boundary: widen to all tied with the k-th
    kth = np.take_along_axis(score, part, axis=1).min(axis=1, keepdims=True)
    idx = np.empty((len(score), k), np.int64)
    for i in range(len(score)):
        cand = np.flatnonzero(score[i] >= kth[i])
        order = np.lexsort((cand, -score[i, cand]))[:k]
        idx[i] = cand[order]
    return idx, np.take_along_axis(score, idx, axis=1)


def search(
    queries: Any,
    q: QuantizedVectors | DimensionVectors,
    k: int = 10,
    metric: str = "cosine",
    rescore: QuantizedVectors | DimensionVectors | np.ndarray | None = None,
    candidates: int | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Top-k of each query over the quantized vectors: (indices, scores), best first.

    With `rescore` (higher-precision codes or the float vectors of the same collection) the
    best `candidates` (default 4k) from the codes are re-ranked with it.
    """
    s = scores(queries, q, metric)
    if rescore is None:
        return top_k(s, k)
    cand, _ = top_k(s, candidates or 4 * k)
    qs = as_matrix(queries, q.dim)
    fine = np.empty(cand.shape, np.float32)
    for i in range(len(qs)):
        if isinstance(rescore, (QuantizedVectors, DimensionVectors)):
            fine[i] = scores(qs[i], rescore.take(cand[i]), metric)[0]
        else:
            fine[i] = exact_scores(qs[i : i + 1], np.asarray(rescore)[cand[i]], metric)[0]
    order, best = top_k(fine, k)
    return np.take_along_axis(cand, order, axis=1), best


def exact_scores(queries: Any, vectors: Any, metric: str = "cosine") -> np.ndarray:
    """(Q, N) float32 similarities of float queries to float vectors."""
    qs = np.asarray(queries, np.float32)
    x = np.asarray(vectors, np.float32)
    out = np.atleast_2d(qs) @ x.T
    if metric == "cosine":
        qn = np.linalg.norm(np.atleast_2d(qs).astype(np.float64), axis=1)
        xn = np.linalg.norm(x.astype(np.float64), axis=1)
        with np.errstate(invalid="ignore", divide="ignore"):
            out /= np.outer(qn, xn).astype(np.float32)
        np.nan_to_num(out, copy=False, nan=0.0, posinf=0.0, neginf=0.0)
    return out


def exact_search(queries: Any, vectors: Any, k: int = 10, metric: str = "cosine"):
    """float32 exact top-k: (indices, scores)."""
    return top_k(exact_scores(queries, vectors, metric), k)


def recall_at_k(found: np.ndarray, truth: np.ndarray) -> float:
    """Mean over queries of |found ∩ truth| / k (both (Q, k) index arrays)."""
    found, truth = np.asarray(found), np.asarray(truth)
    if found.shape != truth.shape:
        raise InvalidDimension(f"found {found.shape} and truth {truth.shape} differ")
    hits = sum(len(np.intersect1d(f, t)) for f, t in zip(found, truth, strict=True))
    return hits / truth.size if truth.size else 1.0


def recall(
    queries: Any,
    vectors: Any,
    q: QuantizedVectors | DimensionVectors,
    k: int = 10,
    metric: str = "cosine",
    **kw: Any,
) -> float:
    """recall@k of search on `q` against float32 exact search over `vectors`."""
    truth, _ = exact_search(queries, vectors, k, metric)
    found, _ = search(queries, q, k, metric, **kw)
    return recall_at_k(found, truth)
