"""Each tensor's error-versus-bytes curve over the candidate codecs: which codecs a tensor
may take, and each one's bytes (from the codec's facts) and measured weighted squared error
(on a deterministic sample of rows for big tensors). bundler.plan.target says how the
curves are used and why the error is measured this way."""

from __future__ import annotations

import zlib
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from bundler.bundle import Tensor
from bundler.codecs import Codec, get
from bundler.errors import UsageError

#: The codecs a free tensor may get: every GGML block codec bundler encodes that llama.cpp
#: stores weights in (not Q8_1/Q8_K, its activation types), and the 16-bit floats.
#: The ternary types (TQ1_0, TQ2_0) and MXFP4 are left out: llama.cpp stores them only for
#: models trained for them (ternary weights, experts), and choosing them needs asking.
CANDIDATES = (
    "q2_k", "q3_k", "iq4_xs", "q4_0", "q4_1", "iq4_nl", "q4_k", "q5_0", "q5_1", "q5_k",
    "q6_k", "q8_0", "bf16", "f16",
)  # fmt: skip
#: Values measured per tensor at most; bigger tensors are measured on a sample of rows.
DEFAULT_SAMPLE_VALUES = 1 << 17
#: Seed of the row samples (mixed with each tensor's name).
SEED = 20240611


@dataclass(frozen=True)
class Point:
    """One candidate of one tensor: its codec, bytes and measured (weighted) error."""

    codec: Codec
    nbytes: int
    error: float


@dataclass
class Curve:
    """A free tensor's candidates, smallest first, and its measured signal energy."""

    index: int
    name: str
    points: list[Point]
    #: weighted sum of squares of the tensor's values (the error of writing zeros)
    signal: float
    sampled_rows: int
    rows: int

    def hull(self) -> list[int]:
        """Indices of the points on the lower convex hull (error falling, ever slower)."""
        order = sorted(
            range(len(self.points)), key=lambda k: (self.points[k].nbytes, self.points[k].error)
        )
        hull: list[int] = []
        for k in order:
            p = self.points[k]
            if hull and p.error >= self.points[hull[-1]].error:
                continue  # no better than a smaller candidate
            while len(hull) >= 2 and _not_convex(self.points[hull[-2]], self.points[hull[-1]], p):
                hull.pop()
            hull.append(k)
        return hull


def _not_convex(a: Point, b: Point, c: Point) -> bool:
    # b lies on or above the segment a-c: the a-c step saves at least as much per byte
    return (b.error - a.error) * (c.nbytes - a.nbytes) >= (c.error - a.error) * (
        b.nbytes - a.nbytes
    )


def candidate_codecs(names: Sequence[str] | None) -> list[Codec]:
    """The codecs `names` (default `CANDIDATES`) after checking each is one of them (or
    F32)."""
    if names is None:
        return [get(n) for n in CANDIDATES]
    if isinstance(names, str):
        names = [n for n in names.split(",") if n.strip()]
    codecs = [get(n.strip().lower() if isinstance(n, str) else n) for n in names]
    bad = [c.name for c in codecs if c.name not in (*CANDIDATES, "f32")]
    if bad or not codecs:
        raise UsageError(
            f"--candidates: {', '.join(bad) or 'none given'}; candidates are codecs bundler "
            f"quantizes weights to: {', '.join(CANDIDATES)} (or f32)"
        )
    return list(dict.fromkeys(codecs))


def candidates(tensor: Tensor, allowed: Sequence[Codec] | None = None) -> list[Codec]:
    """The codecs of `allowed` (default `CANDIDATES`) `tensor` may be written with under a
    size target (those its rows fit), with its own codec (copied as it is) when that is a
    float one."""
    row = tensor.shape[-1]
    allowed = candidate_codecs(None) if allowed is None else allowed
    found = [c for c in allowed if row % c.facts.block_size == 0]
    own = tensor.codec
    if (not own.facts.is_block or own.name in CANDIDATES) and own not in found:
        found.append(own)
    if not found:
        raise UsageError(
            f"tensor {tensor.name!r}: rows of {row} fit none of the candidates "
            f"({', '.join(c.name for c in allowed)}); add f16 to --candidates"
        )
    return found


def sample_rows(name: str, rows: int, row_length: int, sample_values: int) -> np.ndarray | None:
    """The sorted row indices measured for a tensor, or None for all of them."""
    if rows * row_length <= sample_values:
        return None
    k = max(1, sample_values // row_length)
    rng = np.random.default_rng([SEED, zlib.crc32(name.encode("utf-8"))])
    return np.sort(rng.choice(rows, size=k, replace=False))


def float_rows(tensor: Tensor, pick: np.ndarray | None) -> np.ndarray:
    """The tensor's values as float32 rows (all, or those `pick` names)."""
    n = tensor.shape[-1]
    codec = tensor.codec
    if codec.facts.flat:
        values = tensor.numpy().reshape(-1, n)
        return np.asarray(values if pick is None else values[pick], dtype=np.float32)
    raw = tensor.raw().reshape(-1, codec.facts.row_bytes(n))
    raw = raw if pick is None else raw[pick]
    return np.asarray(codec.decode(np.ascontiguousarray(raw), (raw.shape[0], n)), np.float32)


def measure(
    tensor: Tensor,
    codecs: Sequence[Codec],
    *,
    column_weights: np.ndarray | None = None,
    sensitivity: float = 1.0,
    sample_values: int = DEFAULT_SAMPLE_VALUES,
    index: int = 0,
    weighted_encoding: bool = True,
) -> Curve:
    """The (bytes, error) curve of `tensor` over `codecs` (see the module docstring);
    with `column_weights` and `weighted_encoding` the candidates are encoded by the weighted
    quantizers with those weights, as an importance matrix has the tensor written."""
    n = tensor.shape[-1]
    rows = tensor.n_values // n if n else 0
    pick = sample_rows(tensor.name, rows, n, sample_values)
    x = float_rows(tensor, pick)
    w = None
    if column_weights is not None:
        w = np.asarray(column_weights, dtype=np.float64).reshape(-1)
        if w.size != n or not np.all(np.isfinite(w)) or np.any(w < 0):
            raise UsageError(
                f"column weights of tensor {tensor.name!r}: need {n} finite non-negative "
                f"values (one per column), got {w.size}"
            )
    scale = sensitivity * (rows / x.shape[0] if x.shape[0] else 0.0)

    def weighted(d: np.ndarray) -> float:
        sq = np.square(d, dtype=np.float64).sum(axis=0)
        return float((sq @ w) if w is not None else sq.sum()) * scale

    points = []
    for codec in codecs:
        if codec == tensor.codec:
            error = 0.0
        else:
            # with a matrix, measured as it will be written: by the weighted quantizer
            weighs = w is not None and weighted_encoding and codec.facts.takes_importance
            y = codec.decode(codec.encode(x, importance=w if weighs else None), x.shape)
            error = weighted(y.astype(np.float64) - x)
        points.append(Point(codec, codec.facts.nbytes(tensor.shape), error))
    points.sort(key=lambda p: (p.nbytes, p.error))
    sampled = x.shape[0]
    return Curve(index, tensor.name, points, weighted(x.astype(np.float64)), sampled, rows)
