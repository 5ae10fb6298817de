"""The statistics of two models' next-token distributions (bundler/agreement/stats.py)
against their definitions, computed here term by term."""

from __future__ import annotations

import numpy as np
import pytest

from bundler.agreement.chunks import Chunking
from bundler.agreement.stats import ROWS, Tally, log_softmax


def _logits(seed: int, rows: int = 2 * ROWS + 3, vocab: int = 50) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((rows, vocab)).astype(np.float32) * 4


def test_log_softmax_is_normalised_and_shift_invariant():
    x = _logits(0)
    lp = log_softmax(x)
    np.testing.assert_allclose(np.exp(lp).sum(axis=-1), 1.0, rtol=1e-12)
    np.testing.assert_allclose(log_softmax(x.astype(np.float64) + 1000), lp, atol=1e-9)


def test_tally_matches_the_definitions_term_by_term():
    p, q = _logits(1), _logits(2)
    targets = np.random.default_rng(3).integers(0, p.shape[1], p.shape[0])
    tally = Tally()
    tally.add(p[:10], q[:10], targets[:10])  # two chunks: sums carry over
    tally.add(p[10:], q[10:], targets[10:])
    s = tally.summary()
    pp = np.exp(p.astype(np.float64)) / np.exp(p.astype(np.float64)).sum(-1, keepdims=True)
    qq = np.exp(q.astype(np.float64)) / np.exp(q.astype(np.float64)).sum(-1, keepdims=True)
    kl = (pp * np.log(pp / qq)).sum(-1)
    rows = np.arange(len(targets))
    assert s["scored_tokens"] == len(targets)
    assert s["kl_divergence_mean"] == pytest.approx(kl.mean(), rel=1e-5)
    assert s["kl_divergence_max"] == pytest.approx(kl.max(), rel=1e-5)
    # llama-perplexity's percentile: linear between the sorted values at fraction*(n-1)
    ranked = np.sort(kl)
    at = 0.99 * (len(kl) - 1)
    lo = int(at)
    expected = ranked[lo] + (at - lo) * (ranked[lo + 1] - ranked[lo])
    assert s["kl_divergence_p99"] == pytest.approx(expected, rel=1e-5)
    assert s["perplexity_original"] == pytest.approx(np.exp(-np.log(pp[rows, targets]).mean()))
    assert s["perplexity_quantized"] == pytest.approx(np.exp(-np.log(qq[rows, targets]).mean()))
    assert s["top1_agreement"] == np.mean(p.argmax(-1) == q.argmax(-1))
    dp = qq[rows, targets] - pp[rows, targets]
    assert s["delta_p_rms"] == pytest.approx(np.sqrt((dp**2).mean()))


def test_identical_logits_give_zero_divergence_full_agreement_and_equal_perplexity():
    p = _logits(4)
    targets = np.zeros(p.shape[0], dtype=np.int64)
    tally = Tally()
    tally.add(p, p.copy(), targets)
    s = tally.summary()
    assert s["kl_divergence_mean"] == 0.0 and s["kl_divergence_max"] == 0.0
    assert s["top1_agreement"] == 1.0 and s["delta_p_rms"] == 0.0
    assert s["perplexity_original"] == s["perplexity_quantized"]


@pytest.mark.parametrize(
    ("tokens", "context", "limit", "count", "first_inputs"),
    [
        (10, 4, None, 2, [99, 1, 2, 3]),  # a partial last chunk is dropped
        (10, 4, 1, 1, [99, 1, 2, 3]),
        (3, 4, None, 0, None),
        (12, 6, None, 2, [99, 1, 2, 3, 4, 5]),
    ],
)
def test_chunks_replace_the_first_token_with_bos_and_score_the_second_half(
    tokens, context, limit, count, first_inputs
):
    c = Chunking.of(list(range(tokens)), context, limit, bos=99)
    assert c.count == count
    if count:
        assert c.inputs(0) == first_inputs
        assert c.inputs(1)[0] == 99
        # logits at context//2 .. context-2 predict the tokens one further on
        assert list(c.targets(1)) == list(range(context + context // 2 + 1, 2 * context))
        assert len(c.targets(0)) == c.scored_per_chunk == context - 1 - context // 2


def test_chunks_keep_the_first_token_when_the_vocabulary_adds_no_bos():
    assert Chunking.of(list(range(8)), 4, None, bos=None).inputs(1) == [4, 5, 6, 7]
