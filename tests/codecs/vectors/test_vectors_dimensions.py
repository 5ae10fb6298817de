"""Per-dimension ranges (a named option beyond lnmp-quant's schemes): codes, steps and
reconstructions against an independent float64 restatement, the bytes they store, search on
their codes, their bundles, and why they exist (outlier dimensions)."""

from __future__ import annotations

import importlib
import itertools

import lnmp_reference as ref
import numpy as np
import pytest
import vector_cases

import bundler
from bundler import vectors
from bundler.errors import (
    DataCorrupted,
    EncodingFailed,
    InvalidDimension,
    InvalidScheme,
    UsageError,
)

vsearch = importlib.import_module("bundler.codecs.vectors.search")
dimensions = importlib.import_module("bundler.codecs.vectors.dimensions")
LEVELS = {"qint8": 255, "qint4": 15}
RNG = np.random.default_rng(21)
#: clustered vectors with three outlier dimensions 30x wider than the rest
TOPICS = RNG.standard_normal((10, 48))
X = (RNG.standard_normal((2500, 10)) ** 3 @ TOPICS + RNG.standard_normal((2500, 48))).astype(
    np.float32
)
X[:, [3, 17, 40]] *= 30
Q = X[RNG.choice(len(X), 40, replace=False)] + 0.1 * RNG.standard_normal((40, 48)).astype(
    np.float32
)


def _bits(x) -> bytes:
    return np.asarray(x, np.float32).tobytes()


def _matrices() -> dict[str, np.ndarray]:
    """Edge columns side by side (constant, one non-zero, all negative, huge, subnormal...)
    and a random matrix with an odd dimension."""
    edges = {k: v for k, v in vector_cases.edge_vectors().items() if len(v) >= 8}
    cols = {k: np.resize(v, 40) for k, v in edges.items()}
    return {
        "edge_columns": np.stack(list(cols.values()), axis=1),
        "normal_odd_dim": RNG.standard_normal((60, 33)).astype(np.float32) * 5,
        "outlier_dims": X[:200],
    }


def _unpacked(q) -> np.ndarray:
    return q.codes().astype(int)


@pytest.mark.parametrize("name", sorted(_matrices()))
@pytest.mark.parametrize("scheme", ["qint8", "qint4"])
@pytest.mark.parametrize("fit", ["minmax", "mse"])
def test_codes_and_reconstruction_equal_the_restatement_from_the_stored_ranges(name, scheme, fit):
    x = _matrices()[name]
    q = vectors.quantize_dims(x, scheme, fit=fit)
    r, levels = q.ranges, LEVELS[scheme]
    got, recon = q.codes().astype(int), q.dequantize()
    for d in range(x.shape[1]):
        lo, scale = float(r.min[d]), float(r.scale[d])
        codes = ref.dims_codes(x[:, d].tolist(), lo, scale, levels)
        assert got[:, d].tolist() == codes, d
        assert _bits(recon[:, d]) == _bits(ref.dims_decode(codes, scale, lo)), d


@pytest.mark.parametrize("name", sorted(_matrices()))
@pytest.mark.parametrize("scheme", ["qint8", "qint4"])
def test_minmax_ranges_are_each_dimensions_min_and_lnmp_step(name, scheme):
    x = _matrices()[name]
    r = vectors.fit_ranges(x, scheme, fit="minmax")
    assert _bits(r.min) == _bits(x.min(axis=0))
    ranges = zip(x.min(axis=0), x.max(axis=0), strict=True)
    want = [ref.dims_step(lo, hi, LEVELS[scheme]) for lo, hi in ranges]
    assert _bits(r.scale) == _bits(want)


@pytest.mark.parametrize("name", ["normal_odd_dim", "outlier_dims"])
def test_mse_range_is_the_candidate_with_the_least_squared_error(name):
    x = _matrices()[name]
    r = vectors.fit_ranges(x, "qint4", fit="mse")
    med = np.median(x, axis=0).astype(np.float32)
    for d in range(x.shape[1]):
        errors, picks = [], []
        for f in dimensions.SHRINK:
            f = np.float32(f)
            lo = float(np.float32(med[d] + f * np.float32(x[:, d].min() - med[d])))
            hi = float(np.float32(med[d] + f * np.float32(x[:, d].max() - med[d])))
            scale = ref.dims_step(lo, hi, 15)
            codes = ref.dims_codes(x[:, d].tolist(), lo, scale, 15)
            recon = np.array(ref.dims_decode(codes, scale, lo))
            errors.append(float(((recon - x[:, d].astype(np.float64)) ** 2).sum()))
            picks.append((lo, scale))
        best = int(np.argmin(errors))  # the first (widest) of equal errors
        assert (float(r.min[d]), float(r.scale[d])) == picks[best], d


def test_default_fits_and_stored_bytes_are_codes_plus_eight_bytes_a_dimension():
    for scheme, fit, row in (("qint8", "minmax", 48), ("qint4", "mse", 24)):
        q = vectors.quantize_dims(X, scheme)
        assert q.ranges.fit == fit
        assert q.data.shape == (len(X), row)
        assert q.stored_size() == len(X) * row + 8 * 48
    per_vector = vectors.quantize(X, "qint4")
    assert per_vector.stored_size() - vectors.quantize_dims(X, "qint4").stored_size() == (
        8 * len(X) - 8 * 48
    )


def test_trained_ranges_code_other_vectors_and_clamp_values_outside_them():
    r = vectors.fit_ranges(X[:1000], "qint8")
    q = vectors.quantize_dims(X[1000:] * 3, ranges=r)
    u = q.codes()
    assert u.min() == 0 and u.max() == 255
    assert q.ranges is r


@pytest.mark.parametrize("scheme", ["qint8", "qint4"])
@pytest.mark.parametrize("metric", ["cosine", "dot"])
def test_scores_on_codes_equal_scores_on_the_reconstructions(scheme, metric, monkeypatch):
    monkeypatch.setattr(vsearch, "BLOCK_ROWS", 700)
    q = vectors.quantize_dims(X, scheme)
    got = vectors.scores(Q, q, metric)
    want = vsearch.exact_scores(Q, q.dequantize(), metric)
    np.testing.assert_allclose(got, want, rtol=2e-4, atol=2e-4 * np.abs(want).max())


def _steady_spreads() -> tuple[np.ndarray, np.ndarray]:
    """Gaussian clusters whose dimensions keep their spread (three of them 3x wider)."""
    rng = np.random.default_rng(5)
    x = rng.standard_normal((2000, 8)) @ TOPICS[:8] + rng.standard_normal((2000, 48))
    x[:, [3, 17, 40]] *= 3
    queries = x[:40] + 0.1 * rng.standard_normal((40, 48))
    return x.astype(np.float32), queries.astype(np.float32)


@pytest.mark.parametrize(("scheme", "floor"), [("qint8", 0.97), ("qint4", 0.85)])
def test_recall_at_10_on_vectors_whose_dimensions_keep_their_spread(scheme, floor):
    x, queries = _steady_spreads()
    assert vectors.recall(queries, x, vectors.quantize_dims(x, scheme), k=10) >= floor


@pytest.mark.parametrize("scheme", ["qint8", "qint4"])
def test_heavy_tailed_vectors_recall_more_with_per_vector_ranges(scheme):
    # X's vectors are cubes of Gaussians: a dimension's range over the collection is set by
    # a few extreme vectors (formats/vectors.md: where the option does not pay)
    per_vector = vectors.recall(Q, X, vectors.quantize(X, scheme), k=10)
    assert vectors.recall(Q, X, vectors.quantize_dims(X, scheme), k=10) < per_vector


def test_rescoring_binary_candidates_with_dimension_coded_vectors():
    x, queries = _steady_spreads()
    coarse = vectors.quantize(x, "binary")
    fine = vectors.quantize_dims(x, "qint8")
    plain = vectors.recall(queries, x, coarse, k=10)
    assert vectors.recall(queries, x, coarse, k=10, rescore=fine, candidates=100) > plain


def _same(a, b) -> bool:
    return (
        a.scheme == b.scheme
        and a.ranges.fit == b.ranges.fit
        and all(
            x.tobytes() == y.tobytes()
            for x, y in (
                (a.data, b.data),
                (a.ranges.scale, b.ranges.scale),
                (a.ranges.min, b.ranges.min),
            )
        )
    )


FORMATS = ["safetensors", "gguf", "apr"]


@pytest.mark.parametrize(("src", "dst"), list(itertools.permutations(FORMATS, 2)))
@pytest.mark.parametrize("scheme", ["qint8", "qint4"])
def test_a_dimension_coded_collection_converts_between_formats_unchanged(
    tmp_path, src, dst, scheme
):
    q = vectors.quantize_dims(X[:300], scheme)
    first = tmp_path / f"a.{src}"
    vectors.to_bundle(q, "emb").save(first)
    second = tmp_path / f"b.{dst}"
    bundler.open(first).save(second)
    back = vectors.from_bundle(bundler.open(second), "emb")
    assert isinstance(back, vectors.DimensionVectors) and _same(q, back)
    assert sorted(bundler.open(second).tensors) == ["emb.codes", "emb.dim_min", "emb.dim_scale"]


@pytest.mark.parametrize("fmt", FORMATS)
def test_binary_codes_without_per_vector_fields_store_only_the_codes(tmp_path, fmt):
    q = vectors.quantize(X[:300], "binary")
    path = tmp_path / f"b.{fmt}"
    vectors.to_bundle(q, "emb", fields=False).save(path)
    b = bundler.open(path)
    assert list(b.tensors) == ["emb.codes"]
    back = vectors.from_bundle(b)
    assert back.data.tobytes() == q.data.tobytes() and np.isnan(back.min).all()
    assert np.array_equal(vectors.hamming(back, back), vectors.hamming(q, q))
    assert _bits(back.dequantize()) == _bits(q.dequantize())


def test_only_binary_collections_drop_their_per_vector_fields():
    with pytest.raises(UsageError, match="only a binary"):
        vectors.to_bundle(vectors.quantize(X[:5], "qint8"), fields=False)


def test_a_damaged_dimension_bundle_is_a_typed_error(tmp_path):
    b = vectors.to_bundle(vectors.quantize_dims(X[:50], "qint8"), "emb")
    b.metadata["vectors.emb.dim"] = 47
    path = tmp_path / "bad.safetensors"
    b.save(path)
    with pytest.raises(DataCorrupted, match="emb"):
        vectors.from_bundle(bundler.open(path))


@pytest.mark.parametrize(
    ("call", "error"),
    [
        (lambda: vectors.quantize_dims(X, "binary"), InvalidScheme),
        (lambda: vectors.quantize_dims(X, "fp16"), InvalidScheme),
        (lambda: vectors.quantize_dims(np.where(X[3, 4] == X, np.nan, X), "qint8"), EncodingFailed),
        (
            lambda: vectors.quantize_dims(X[:, :10], ranges=vectors.fit_ranges(X, "qint8")),
            InvalidDimension,
        ),
        (lambda: vectors.quantize_dims(X, "qint8", fit="median"), UsageError),
        (lambda: vectors.quantize_dims(X), UsageError),
    ],
)
def test_bad_input_is_a_typed_error(call, error):
    with pytest.raises(error):
        call()
