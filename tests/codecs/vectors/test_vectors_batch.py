"""Batches: a bad vector fails alone with its typed error and index; the others come back
exactly as if quantized on their own; statistics count both."""

from __future__ import annotations

import numpy as np
import pytest

from bundler import vectors
from bundler.errors import EncodingFailed, InvalidDimension

RNG = np.random.default_rng(21)
GOOD = RNG.standard_normal((9, 64)).astype(np.float32)


def _mixed_batch():
    rows = [GOOD[i] for i in range(9)]
    nan = GOOD[0].copy()
    nan[3] = np.nan
    inf = GOOD[1].copy()
    inf[0] = np.inf
    rows.insert(4, nan)  # index 4
    rows.insert(6, GOOD[2][:63])  # index 6: wrong dimension
    rows.insert(8, np.zeros(0, np.float32))  # index 8: zero length
    rows.insert(10, inf)  # index 10
    return rows


@pytest.mark.parametrize("scheme", list(vectors.Scheme))
def test_nan_wrong_dimension_empty_and_inf_vectors_fail_alone(scheme):
    rows = _mixed_batch()
    result = vectors.quantize_batch(rows, scheme)
    assert sorted(result.errors) == [4, 6, 8, 10]
    assert isinstance(result.errors[4], EncodingFailed) and "nan" in str(result.errors[4])
    assert isinstance(result.errors[6], InvalidDimension) and "63 values" in str(result.errors[6])
    assert isinstance(result.errors[8], InvalidDimension)
    assert isinstance(result.errors[10], EncodingFailed) and "inf" in str(result.errors[10])
    assert all(err.index == i for i, err in result.errors.items())
    per_vector = result.results
    good_positions = [i for i in range(len(rows)) if i not in result.errors]
    assert result.ok.tolist() == good_positions
    for i in good_positions:
        assert per_vector[i] == vectors.quantize(rows[i], scheme)
    assert (result.stats.total, result.stats.succeeded, result.stats.failed) == (13, 9, 4)
    assert result.stats.seconds > 0 and result.stats.vectors_per_second > 0


def test_a_matrix_batch_with_a_nan_row_keeps_every_other_row():
    x = GOOD.copy()
    x[5, 7] = np.nan
    result = vectors.quantize_batch(x, "qint4")
    assert list(result.errors) == [5]
    assert (
        result.quantized.data.tobytes()
        == vectors.quantize(np.delete(x, 5, 0), "qint4").data.tobytes()
    )


def test_a_range_overflow_fails_only_that_vector():
    rows = [GOOD[0], np.array([3e38] + [-3e38] * 63, np.float32), GOOD[1]]
    result = vectors.quantize_batch(rows, "qint8")
    assert list(result.errors) == [1] and "overflows" in str(result.errors[1])
    assert result.stats.succeeded == 2


def test_the_batch_dimension_can_be_given():
    result = vectors.quantize_batch([GOOD[0][:32], GOOD[1]], "fp16", dim=32)
    assert list(result.errors) == [1] and result.dim == 32
