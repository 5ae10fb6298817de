"""decode(encode(x)) stays within a bound derived from each codec's step size."""

from __future__ import annotations

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

import bundler

#: Half precision: rounding error of a stored scale or minimum is at most
#: HALF_EPS * |value| + HALF_ABS (the absolute term covers subnormal halves).
HALF_EPS = 2.0**-11
HALF_ABS = 2.0**-25
#: float32 slack for the arithmetic itself (a few ulps of the block's magnitude).
F32_SLACK = 2.0**-20


def _blocks(x: np.ndarray) -> np.ndarray:
    return x.astype(np.float64).reshape(-1, 32)


def symmetric_bound(x: np.ndarray, levels: int) -> np.ndarray:
    """Q4_0 / Q5_0 / Q8_0: step d = max|x| / levels.

    Codes round to the nearest step (error d/2), except that the positive end is clamped one
    step short (error up to d) for the 4- and 5-bit types; the stored half scale adds
    |q| * |d - d_half|, at most levels times the half rounding error of d.
    """
    amax = np.abs(_blocks(x)).max(axis=1, keepdims=True)
    d = amax / levels
    clamp = 1.0 if levels in (8, 16) else 0.5
    return d * clamp + levels * (d * HALF_EPS + HALF_ABS) + amax * F32_SLACK


def affine_bound(x: np.ndarray, maxq: int) -> np.ndarray:
    """Q4_1 / Q5_1: step d = (max - min) / maxq, error d/2 plus the rounding of d and min."""
    b = _blocks(x)
    lo, hi = b.min(axis=1, keepdims=True), b.max(axis=1, keepdims=True)
    d = (hi - lo) / maxq
    scale = np.maximum(np.abs(lo), np.abs(hi))
    half_d = maxq * (d * HALF_EPS + HALF_ABS)
    return d / 2 + half_d + np.abs(lo) * HALF_EPS + HALF_ABS + scale * F32_SLACK


BOUNDS = {
    "q4_0": lambda x: symmetric_bound(x, 8),
    "q5_0": lambda x: symmetric_bound(x, 16),
    "q8_0": lambda x: symmetric_bound(x, 127),
    "q8_1": lambda x: symmetric_bound(x, 127),
    "q4_1": lambda x: affine_bound(x, 15),
    "q5_1": lambda x: affine_bound(x, 31),
}

magnitudes = st.floats(min_value=1e-6, max_value=1e3)
unit = st.floats(min_value=-1.0, max_value=1.0, width=32)


@settings(max_examples=200, deadline=None)
@given(
    name=st.sampled_from(sorted(BOUNDS)),
    scale=magnitudes,
    x=hnp.arrays(np.float32, st.sampled_from([(1, 32), (2, 64), (3, 96)]), elements=unit),
)
def test_reconstruction_error_is_within_the_codec_step(name, scale, x):
    x = (x * np.float32(scale)).astype(np.float32)
    y = bundler.decode(bundler.encode(x, name), name)
    err = np.abs(_blocks(x) - _blocks(y))
    bound = BOUNDS[name](x)
    assert (err <= bound).all(), f"worst excess {float((err - bound).max())}"


@settings(max_examples=50, deadline=None)
@given(
    name=st.sampled_from(["f16", "bf16"]),
    x=hnp.arrays(np.float32, st.sampled_from([(4,), (2, 8)]), elements=unit),
)
def test_float_codecs_round_to_the_nearest_representable_value(name, x):
    y = bundler.decode(bundler.encode(x, name), name)
    ulp_bits = 10 if name == "f16" else 7
    tiny = 2.0**-25 if name == "f16" else 2.0**-134  # half the smallest subnormal
    bound = np.abs(x.astype(np.float64)) * 2.0 ** -(ulp_bits + 1) + tiny
    assert (np.abs(x.astype(np.float64) - y) <= bound).all()
