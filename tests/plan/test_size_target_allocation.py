"""The size target (bundler.plan.target, .curves, .allocate) on small inputs: the convex hulls, the
greedy's guarantee against an exhaustive search, the measured errors and their sampling,
and the target's parsing."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bundler.bundle import Tensor
from bundler.codecs import get
from bundler.errors import UsageError
from bundler.plan.allocate import allocate
from bundler.plan.curves import (
    CANDIDATES,
    Curve,
    Point,
    candidate_codecs,
    candidates,
    measure,
    sample_rows,
)
from bundler.plan.target import SizeTarget

F16 = get("f16")


def _curve(points: list[tuple[int, float]], index: int = 0) -> Curve:
    pts = sorted((Point(F16, b, e) for b, e in points), key=lambda p: (p.nbytes, p.error))
    return Curve(index, f"t{index}", pts, signal=1.0, sampled_rows=1, rows=1)


def test_hull_drops_points_above_the_lower_convex_hull_and_points_that_do_not_help():
    c = _curve([(10, 100.0), (20, 40.0), (30, 35.0), (40, 10.0), (50, 12.0), (60, 0.0)])
    # (30, 35) lies above the segment (20, 40)-(40, 10); (50, 12) is worse than (40, 10)
    assert [(c.points[k].nbytes, c.points[k].error) for k in c.hull()] == [
        (10, 100.0), (20, 40.0), (40, 10.0), (60, 0.0),
    ]  # fmt: skip


def _exhaustive(curves: list[Curve], budget: int) -> float:
    best = float("inf")
    for pick in itertools.product(*(range(len(c.points)) for c in curves)):
        if sum(c.points[k].nbytes for c, k in zip(curves, pick, strict=True)) <= budget:
            best = min(best, sum(c.points[k].error for c, k in zip(curves, pick, strict=True)))
    return best


curve_points = st.lists(
    st.tuples(st.integers(1, 60), st.floats(0, 100, allow_nan=False)), min_size=1, max_size=4
)


@settings(max_examples=150, deadline=None)
@given(st.lists(curve_points, min_size=1, max_size=4), st.integers(0, 250))
def test_allocation_fits_and_is_at_least_the_optimum_of_the_budget_less_one_step(pts, slack):
    curves = [_curve(p, i) for i, p in enumerate(pts)]
    smallest = sum(c.points[0].nbytes for c in curves)
    budget = smallest + slack
    pick = allocate(curves, budget)
    spent = sum(c.points[k].nbytes for c, k in zip(curves, pick, strict=True))
    error = sum(c.points[k].error for c, k in zip(curves, pick, strict=True))
    assert spent <= budget
    # the Lagrangian guarantee: optimal for what the hull walk spent, which is at least the
    # budget less the largest step of any curve
    step = max(c.points[-1].nbytes - c.points[0].nbytes for c in curves)
    assert error <= _exhaustive(curves, max(budget - step, smallest)) + 1e-9
    # and no single change that still fits lowers the error (the second pass spends leftovers)
    for i, c in enumerate(curves):
        for p in c.points:
            if spent - c.points[pick[i]].nbytes + p.nbytes <= budget:
                assert p.error >= c.points[pick[i]].error - 1e-9


def test_allocation_is_the_exhaustive_optimum_when_the_budget_lands_on_hull_steps():
    curves = [
        _curve([(10, 50.0), (20, 20.0), (40, 5.0)], 0),
        _curve([(10, 30.0), (15, 10.0), (30, 1.0)], 1),
        _curve([(5, 8.0), (25, 2.0)], 2),
    ]
    for budget in (25, 30, 40, 60, 75, 95):  # the breakpoints of the hull walk
        pick = allocate(curves, budget)
        error = sum(c.points[k].error for c, k in zip(curves, pick, strict=True))
        assert error == pytest.approx(_exhaustive(curves, budget)), budget


def test_allocation_below_the_smallest_points_is_refused():
    with pytest.raises(ValueError, match="smallest candidates need 20 bytes"):
        allocate([_curve([(10, 1.0)], 0), _curve([(10, 1.0)], 1)], 19)


@pytest.mark.parametrize(
    ("text", "size"),
    [("80M", 80_000_000), ("80MB", 80_000_000), ("75MiB", 75 * 2**20), ("1.5G", 1_500_000_000),
     ("2KiB", 2048), ("123456", 123456), (4096, 4096)],
)  # fmt: skip
def test_target_sizes_take_decimal_and_binary_suffixes(text, size):
    assert SizeTarget.parse(text).size == size


def test_bits_per_weight_give_bytes_for_the_whole_file():
    assert SizeTarget.parse(bpw="4.5").bytes_for(1_000_000) == 562_500


@pytest.mark.parametrize(
    ("size", "bpw", "match"),
    [(None, None, "give one of"), ("80M", 4.5, "give one of"), ("eighty", None, "not a size"),
     ("-1M", None, "positive"), (None, "0", "positive"), (None, "nan", "positive"),
     (None, "x", "not a number")],
)  # fmt: skip
def test_bad_targets_are_usage_errors(size, bpw, match):
    with pytest.raises(UsageError, match=match):
        SizeTarget.parse(size, bpw)


def test_candidates_are_the_codecs_whose_block_divides_the_rows_plus_the_own_float():
    t = Tensor.from_array("w", np.zeros((4, 576), np.float32))
    names = [c.name for c in candidates(t)]
    # 576 = 18 x 32: the legacy blocks and IQ4_NL fit, the 256-value super-blocks do not
    assert names == [n for n in CANDIDATES if get(n).facts.block_size in (1, 32)] + ["f32"]
    assert "iq4_nl" in names and "iq4_xs" not in names and "q4_k" not in names
    wide = Tensor.from_array("w", np.zeros((4, 512), np.float16))
    assert [c.name for c in candidates(wide)] == list(CANDIDATES)  # f16 is a candidate already
    odd = Tensor.from_array("w", np.zeros((4, 33), np.float32))
    assert [c.name for c in candidates(odd)] == ["bf16", "f16", "f32"]


@pytest.mark.parametrize("names", [["q8_k"], ["apr_q4"], ["i64"], []])
def test_candidates_refuse_codecs_that_are_no_weight_codec(names):
    with pytest.raises(UsageError, match="--candidates"):
        candidate_codecs(names)


def _weights(rows: int, cols: int, seed: int = 1) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((rows, cols)).astype(np.float32)


def test_measured_error_is_the_squared_error_of_the_round_trip_and_zero_for_a_copy():
    x = _weights(8, 64)
    curve = measure(Tensor.from_array("w", x), [get("q4_0"), get("q8_0"), get("f32")])
    by = {p.codec.name: p for p in curve.points}
    q = get("q4_0")
    assert by["q4_0"].error == pytest.approx(
        float(((q.decode(q.encode(x), x.shape) - x) ** 2).sum())
    )
    assert by["q4_0"].nbytes == 8 * 2 * 18
    assert by["f32"].error == 0.0
    assert by["q8_0"].error < by["q4_0"].error
    assert curve.signal == pytest.approx(float((x.astype(np.float64) ** 2).sum()))


def test_column_weights_scale_each_columns_error():
    x = _weights(8, 64)
    t = Tensor.from_array("w", x)
    plain = measure(t, [get("q8_0")]).points[0].error  # Q8_0's quantizer ignores weights
    assert measure(t, [get("q8_0")], column_weights=np.full(64, 2.0)).points[0].error == (
        pytest.approx(2 * plain)
    )
    assert measure(t, [get("q4_0")], column_weights=np.zeros(64)).points[0].error == 0.0
    with pytest.raises(UsageError, match="need 64 finite non-negative"):
        measure(t, [get("q4_0")], column_weights=np.ones(63))


def test_a_weighted_codec_is_measured_as_its_weighted_quantizer_encodes():
    x = _weights(8, 64)
    w = np.random.default_rng(2).uniform(0.1, 3.0, 64).astype(np.float32)
    q = get("q4_0")
    y = q.decode(q.encode(x, importance=w), x.shape)
    expected = float(((y.astype(np.float64) - x) ** 2).sum(axis=0) @ w)
    error = measure(Tensor.from_array("w", x), [q], column_weights=w).points[0].error
    assert error == pytest.approx(expected)
    unweighted = q.decode(q.encode(x), x.shape)
    assert not np.array_equal(y, unweighted)  # the weights changed the encoding


def test_big_tensors_are_measured_on_the_same_sample_of_rows_every_time():
    first = sample_rows("blk.0.ffn_up.weight", 1000, 64, 6400)
    assert len(first) == 100 and np.all(np.diff(first) > 0)
    assert np.array_equal(first, sample_rows("blk.0.ffn_up.weight", 1000, 64, 6400))
    assert not np.array_equal(first, sample_rows("blk.1.ffn_up.weight", 1000, 64, 6400))
    assert sample_rows("small", 10, 64, 6400) is None


def test_a_sampled_measure_estimates_the_whole_tensors_error():
    t = Tensor.from_array("w", _weights(4096, 64))
    whole = measure(t, [get("q4_0")], sample_values=1 << 20)
    sampled = measure(t, [get("q4_0")], sample_values=1 << 14)
    assert sampled.sampled_rows == 256 and whole.sampled_rows == 4096
    assert sampled.points[0].error == pytest.approx(whole.points[0].error, rel=0.05)
