"""How well each scheme keeps a collection: bytes, compression, cosine to the originals,
recall@k of search on the codes against float32 exact search, and encode/decode time.

Queries are a seeded sample of the collection's own vectors; each query's own row is left
out of both result lists (searching for k + 1 and dropping it), so recall measures the
neighbours, not the trivial self-match.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import numpy as np

from bundler.codecs.vectors import schemes as vq
from bundler.codecs.vectors.dimensions import quantize_dims
from bundler.codecs.vectors.schemes import Scheme, cosine
from bundler.codecs.vectors.search import exact_scores, scores, top_k

#: Seed of the query sample.
QUERY_SEED = 13


def sample_queries(n: int, count: int, seed: int = QUERY_SEED) -> np.ndarray:
    """`count` distinct row indices of an n-row collection, sorted, seeded."""
    rng = np.random.Generator(np.random.PCG64(seed))
    return np.sort(rng.choice(n, size=min(count, n), replace=False))


def neighbours(score: np.ndarray, own: np.ndarray, k: int) -> np.ndarray:
    """Top-k of each row of `score` leaving out the query's own index `own[i]`."""
    score = score.copy()
    score[np.arange(len(own)), own] = -np.inf
    return top_k(score, k)[0]


def recall_excluding_self(found: np.ndarray, truth: np.ndarray) -> float:
    hits = sum(len(np.intersect1d(f, t)) for f, t in zip(found, truth, strict=True))
    return hits / truth.size


@dataclass
class SchemeReport:
    """One scheme's figures on one collection."""

    scheme: str
    vectors: int
    dim: int
    data_bytes: int
    stored_bytes: int
    compression: float
    mean_cosine: float
    min_cosine: float
    recall_at_k: float
    k: int
    encode_seconds: float
    decode_seconds: float

    def as_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


def ground_truth(x: np.ndarray, queries: np.ndarray, k: int, metric: str = "cosine"):
    """float32 exact top-k neighbours (self excluded) of rows `queries` of x."""
    return neighbours(exact_scores(x[queries], x, metric), queries, k)


#: Suffix of a scheme name meaning its per-dimension ranges ("qint8-dims").
DIMS = "-dims"


def evaluate_scheme(
    x: np.ndarray,
    scheme: Scheme | str,
    queries: np.ndarray,
    truth: np.ndarray,
    k: int = 10,
    metric: str = "cosine",
) -> tuple[SchemeReport, Any]:
    """The figures of `scheme` (or "qint8-dims" / "qint4-dims": per-dimension ranges) on
    matrix x, given query rows and their exact neighbours."""
    dims = isinstance(scheme, str) and scheme.lower().endswith(DIMS)
    scheme = Scheme.parse(scheme[: -len(DIMS)] if dims else scheme)
    if dims:
        start = time.perf_counter()
        q = quantize_dims(x, scheme)
        encoded = time.perf_counter()
        decoded = q.dequantize()
    else:
        # load the compiled kernels before timing
        vq.dequantize(vq.quantize_matrix(x[:1], scheme))
        start = time.perf_counter()
        q = vq.quantize_matrix(x, scheme)
        encoded = time.perf_counter()
        decoded = vq.dequantize(q)
    done = time.perf_counter()
    cos = cosine(x, decoded)
    found = neighbours(scores(x[queries], q, metric), queries, k)
    report = SchemeReport(
        scheme.value + (DIMS if dims else ""),
        len(x),
        x.shape[1],
        q.data_size(),
        q.stored_size(),
        4.0 * x.size / q.data_size(),
        float(cos.mean()),
        float(cos.min()),
        recall_excluding_self(found, truth),
        k,
        encoded - start,
        done - encoded,
    )
    return report, q


def evaluate(
    x: Any,
    schemes: list[Scheme | str] | None = None,
    queries: int = 100,
    k: int = 10,
    metric: str = "cosine",
) -> list[SchemeReport]:
    """Figures of every scheme (default all four) on collection x."""
    x = vq.as_matrix(x)
    vq.check_finite(x)
    rows = sample_queries(len(x), queries)
    truth = ground_truth(x, rows, k, metric)
    return [evaluate_scheme(x, s, rows, truth, k, metric)[0] for s in (schemes or list(Scheme))]
