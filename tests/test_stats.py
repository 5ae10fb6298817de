"""Error statistics between an original and a decoded tensor."""

from __future__ import annotations

import math

import numpy as np
import pytest

import bundler
from bundler.errors import ShapeError
from bundler.stats import error_stats


def test_figures_on_a_hand_computed_example():
    s = error_stats(np.array([3.0, 4.0]), np.array([3.0, 3.0]), encoded_nbytes=4)
    assert s.n == 2
    assert s.rmse == pytest.approx(math.sqrt(0.5))
    assert s.max_abs == 1.0 and s.mean_abs == 0.5
    assert s.cosine == pytest.approx(21 / (5 * math.sqrt(18)))
    assert s.snr_db == pytest.approx(10 * math.log10(25 / 1))
    assert s.compression_ratio == 2.0


def test_exact_reconstruction_has_infinite_snr_and_unit_cosine():
    x = np.arange(10, dtype=np.float32)
    s = error_stats(x, x)
    assert s.rmse == 0.0 and s.snr_db == math.inf and s.cosine == pytest.approx(1.0)
    assert s.compression_ratio is None


def test_zero_tensors_have_defined_cosine():
    z = np.zeros(8)
    assert error_stats(z, z).cosine == 1.0
    assert error_stats(z, np.ones(8)).cosine == 0.0


def test_shapes_must_match():
    with pytest.raises(ShapeError):
        error_stats(np.zeros(3), np.zeros(4))


def test_chunked_sums_equal_a_direct_computation_on_a_large_tensor():
    rng = np.random.default_rng(0)
    x = rng.standard_normal(3_000_001).astype(np.float32)
    y = bundler.decode(bundler.encode(x[:2_999_968], "q4_0"), "q4_0")
    x = x[:2_999_968]
    s = error_stats(x, y)
    e = x.astype(np.float64) - y
    assert s.rmse == pytest.approx(math.sqrt(np.mean(e * e)), rel=1e-12)
    assert s.max_abs == float(np.abs(e).max())


@pytest.mark.parametrize(
    "name, min_snr",
    [("q4_0", 17.0), ("q4_1", 18.0), ("q5_0", 23.0), ("q5_1", 24.0), ("q8_0", 40.0)],
)
def test_more_bits_give_more_snr_on_weight_like_data(name, min_snr):
    rng = np.random.default_rng(1)
    x = (rng.standard_normal((64, 4096)) * 0.02).astype(np.float32)
    raw = bundler.encode(x, name)
    s = error_stats(x, bundler.decode(raw, name), raw.nbytes)
    assert s.snr_db > min_snr
    assert s.compression_ratio == pytest.approx(32 / bundler.codec(name).facts.bits_per_weight)
