"""Adaptive choice: lnmp-quant's four targets, and the cheapest scheme per vector or per
collection meeting a cosine target, with the mix and bytes reported."""

from __future__ import annotations

import numpy as np
import pytest

from bundler import vectors
from bundler.errors import UsageError

X = np.random.default_rng(4).standard_normal((200, 96)).astype(np.float32)


@pytest.mark.parametrize(
    ("target", "scheme"),
    [("maximum", "fp16"), ("high", "qint8"), ("balanced", "qint4"), ("compact", "binary")],
)
def test_accuracy_targets_pick_lnmp_quants_schemes(target, scheme):
    q = vectors.quantize_adaptive(X[0], target)
    assert q == vectors.quantize(X[0], scheme)
    assert vectors.AccuracyTarget(target).scheme.value == scheme


@pytest.mark.parametrize("target", [0.5, 0.9, 0.99, 0.9999])
def test_every_vector_meets_the_target_with_the_cheapest_scheme(target):
    mixed, report = vectors.quantize_to_target(X, target)
    cos = vectors.cosine(X, mixed.dequantize())
    assert (cos >= target).all() and report.missed == 0
    order = ["binary", "qint4", "qint8", "fp16"]
    for i, code in enumerate(mixed.schemes.tolist()):
        chosen = vectors.Scheme.parse(int(code))
        for cheaper in order[: order.index(chosen.value)]:
            c = vectors.vector_cosine(X[i], vectors.quantize(X[i], cheaper))
            assert c < target
    assert sum(report.mix.values()) == len(X)
    assert report.bytes_saved == 4 * X.size - mixed.stored_size() > 0


def test_a_mixed_target_uses_more_than_one_scheme():
    x = X.copy()
    x[:50] = np.sign(x[:50])  # ±1 vectors: binary is exact for them
    _, report = vectors.quantize_to_target(x, 0.99)
    assert report.mix["binary"] == 50 and report.mix["qint4"] + report.mix["qint8"] == 150


@pytest.mark.parametrize(("statistic", "scheme"), [("min", "qint8"), ("mean", "qint4")])
def test_per_collection_picks_one_scheme_by_worst_or_mean_cosine(statistic, scheme):
    c4 = vectors.vector_cosine(X, vectors.quantize(X, "qint4"))
    target = float((c4.min() + c4.mean()) / 2)  # qint4's mean meets it, its worst does not
    _, report = vectors.quantize_to_target(X, target, per="collection", statistic=statistic)
    assert report.mix[scheme] == len(X)


@pytest.mark.parametrize("bad", [0.0, 1.5, -1])
def test_a_target_outside_zero_one_is_a_usage_error(bad):
    with pytest.raises(UsageError):
        vectors.quantize_to_target(X, bad)
