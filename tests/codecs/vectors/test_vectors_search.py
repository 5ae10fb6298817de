"""Search on the codes: scores equal those of the reconstructions (computed without them),
Hamming on binary codes, deterministic top-k, rescoring, recall against exact search."""

from __future__ import annotations

import importlib

import numpy as np
import pytest

from bundler import vectors

#: the module (bundler.vectors.search is the function)
vsearch = importlib.import_module("bundler.codecs.vectors.search")
RNG = np.random.default_rng(8)
TOPICS = RNG.standard_normal((12, 64))
X = (RNG.standard_normal((3000, 12)) ** 3 @ TOPICS + RNG.standard_normal((3000, 64))).astype(
    np.float32
)
Q = X[RNG.choice(len(X), 40, replace=False)] + 0.1 * RNG.standard_normal((40, 64)).astype(
    np.float32
)


@pytest.mark.parametrize("scheme", ["qint8", "qint4", "fp16"])
@pytest.mark.parametrize("metric", ["cosine", "dot"])
def test_scores_on_codes_equal_scores_on_the_reconstructions(scheme, metric, monkeypatch):
    monkeypatch.setattr(vsearch, "BLOCK_ROWS", 700)  # several blocks, one partial
    q = vectors.quantize(X, scheme)
    got = vectors.scores(Q, q, metric)
    want = vsearch.exact_scores(Q, q.dequantize(), metric)
    np.testing.assert_allclose(got, want, rtol=2e-4, atol=2e-4 * np.abs(want).max())


def test_binary_scores_are_one_minus_twice_the_normalized_hamming_distance():
    q = vectors.quantize(X[:100], "binary")
    qb = vectors.quantize(Q, "binary")
    bits_a = np.unpackbits(qb.data, axis=1, bitorder="little")[:, :64].astype(int)
    bits_b = np.unpackbits(q.data, axis=1, bitorder="little")[:, :64].astype(int)
    hamming = (bits_a[:, None, :] != bits_b[None, :, :]).sum(axis=2)
    assert (vectors.hamming(qb, q) == hamming).all()
    assert np.array_equal(vectors.scores(Q, q), 1.0 - 2.0 * hamming / 64)


def test_top_k_breaks_ties_by_the_lower_index():
    score = np.array([[0.5, 0.9, 0.5, 0.9, 0.1, 0.5]], np.float32)
    idx, best = vectors.top_k(score, 4)
    assert idx.tolist() == [[1, 3, 0, 2]] and np.array_equal(best, score[:, [1, 3, 0, 2]])


@pytest.mark.parametrize(("scheme", "floor"), [("fp16", 0.99), ("qint8", 0.95), ("qint4", 0.7)])
def test_recall_at_10_against_exact_float32_search(scheme, floor):
    q = vectors.quantize(X, scheme)
    assert vectors.recall(Q, X, q, k=10) >= floor


def test_rescoring_binary_candidates_with_int8_codes_raises_recall():
    coarse = vectors.quantize(X, "binary")
    fine = vectors.quantize(X, "qint8")
    plain = vectors.recall(Q, X, coarse, k=10)
    rescored = vectors.recall(Q, X, coarse, k=10, rescore=fine, candidates=100)
    exact = vectors.recall(Q, X, coarse, k=10, rescore=X, candidates=100)
    assert plain < rescored <= exact
    assert rescored >= 0.85


def test_recall_of_exact_search_against_itself_is_one():
    truth, _ = vectors.exact_search(Q, X, 10)
    assert vectors.recall_at_k(truth, truth) == 1.0
