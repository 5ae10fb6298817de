"""MSE and Entropy calibration against independent restatements of their searches."""

from __future__ import annotations

import ml_dtypes
import numpy as np
import pytest

from bundler.codecs.affine import AffineCodec, calibrate, runs
from bundler.codecs.affine.scheme import MAX_BITS
from bundler.errors import NonFiniteError, UsageError

RNG = np.random.default_rng(5)
# heavy-tailed rows (Student t), where clipping pays
HEAVY = RNG.standard_t(3, size=(12, 512)).astype(np.float32)
# multiples of 1/16 up to 15/16: under MinMax's int4 scale 1/8 every odd one is a tie
HALVES = (RNG.integers(-15, 16, size=(6, 256)) / 16).astype(np.float32)
HALVES[:, 0] = 15 / 16
SCALE_TYPES = {"f32": np.float32, "f16": np.float16, "bf16": ml_dtypes.bfloat16}


def _slice_errors(x, codec):
    """Per-row squared error of encode/decode, in float64."""
    d = codec.decode(codec.encode(x)).astype(np.float64)
    return ((x.astype(np.float64) - d) ** 2).reshape(x.shape[0], -1).sum(axis=1)


def _restated_errors(row, lo0, hi0, factors, bits, symmetric, scale_dtype="f32", rule=""):
    qmin = -(2 ** (bits - 1)) if symmetric else 0
    qmax = 2 ** (bits - 1) - 1 if symmetric else 2**bits - 1
    out = []
    for f in factors:
        a, b = lo0 * f, hi0 * f
        s = max(-a, b) / ((qmax - qmin) / 2) if symmetric else (b - a) / (qmax - qmin)
        if rule == "extreme":  # the value of largest magnitude is code qmin: s < 0 if it is > 0
            s = (a if -a >= b else b) / qmin
        s = float(np.float32(s).astype(SCALE_TYPES[scale_dtype]))
        z = 0 if symmetric else min(max(np.rint(qmin - a / s), qmin), qmax)
        q = np.clip(np.rint(row.astype(np.float64) / s) + z, qmin, qmax)
        r = (np.float32(1) * (q - z).astype(np.float32)) * np.float32(s)
        out.append(float(((row.astype(np.float64) - r) ** 2).sum()))
    return np.array(out)


@pytest.mark.parametrize(
    "spec", ["int4:channel", "int4:channel:asym", "int8:channel", "int3:g64:asym"]
)
def test_mse_is_never_worse_than_minmax_on_any_slice(spec):
    x = HEAVY if "g64" not in spec else HEAVY.reshape(-1, 64)
    mse = _slice_errors(x, AffineCodec(spec + ":mse"))
    mm = _slice_errors(x, AffineCodec(spec + ":minmax"))
    assert np.all(mse <= mm)
    assert mse.sum() < mm.sum()  # heavy tails: clipping helps somewhere


@pytest.mark.parametrize(
    ("rows", "symmetric", "scale_dtype"),
    [
        (HEAVY, True, "f32"),
        (HEAVY, False, "f32"),
        (HEAVY, True, "f16"),
        (HEAVY, False, "bf16"),
        (HALVES, True, "f32"),  # quotients exactly on half-integers: ties to even
        (HALVES, False, "f32"),
    ],
)
def test_mse_choice_is_the_least_error_of_its_candidates(rows, symmetric, scale_dtype):
    _assert_restated_mse(rows, 4, symmetric, scale_dtype)


# 64 slices and more go through the search's per-slice path, with its shortcuts (bounds
# from the clipped extremes, approximate errors that cannot win): the same choices
_MANY_RNG = np.random.default_rng(11)
MANY = _MANY_RNG.standard_t(3, size=(80, 256)).astype(np.float32)
MANY_HALVES = (_MANY_RNG.integers(-15, 16, size=(72, 128)) / 16).astype(np.float32)
MANY_HALVES[:, 0] = 15 / 16


@pytest.mark.parametrize(
    ("rows", "bits", "symmetric", "scale_dtype"),
    [
        (MANY, 4, True, "f32"),
        (MANY, 4, False, "f16"),
        (MANY, 8, True, "f32"),
        (MANY, 8, False, "bf16"),
        (MANY, 3, False, "f32"),
        (MANY_HALVES, 4, True, "f32"),
        (MANY_HALVES, 4, False, "f32"),
    ],
)
def test_mse_choice_on_many_slices_is_the_least_error_of_its_candidates(
    rows, bits, symmetric, scale_dtype
):
    _assert_restated_mse(rows, bits, symmetric, scale_dtype)


# rows that MinMax's range reproduces exactly (error 0, under any bound the shortcuts
# trust: every candidate left is compared exactly) and 16-bit codes (the widest slack, so
# the widest margin: the most contenders), on both paths
_ZERO_ERROR = (_MANY_RNG.integers(0, 16, size=(80, 128)) / 8).astype(np.float32)
_ZERO_ERROR[:, :2] = [0, 15 / 8]  # int4 asymmetric MinMax scale 1/8: every value a code
_WIDE = (_MANY_RNG.standard_t(3, size=(80, 128)) * 1000).astype(np.float32)


@pytest.mark.parametrize(
    ("rows", "bits", "symmetric"),
    [(_ZERO_ERROR, 4, False), (_WIDE, 16, True), (_WIDE, 16, False)],
    ids=["zero-error", "int16-sym", "int16-asym"],
)
@pytest.mark.parametrize("slices", [8, 80])
def test_mse_choice_at_zero_error_and_at_the_widest_margin_is_the_least_error_of_candidates(
    rows, bits, symmetric, slices
):
    _assert_restated_mse(rows[:slices], bits, symmetric, "f32")


@pytest.mark.parametrize("n", [1, 128, runs.SUM_BLOCK, runs.SUM_BLOCK + 1, 1 << 34])
def test_mse_slack_stays_under_the_shortcuts_proof_bound_at_the_widest_codes(n):
    # the shortcuts are proved for a slack up to 1/10 and used for every slice: this holds
    # while a scheme's codes are 16 bits at most, whatever the slice's length
    assert MAX_BITS == 16
    assert runs.slack(n, 2**MAX_BITS) < 0.1


# slices longer than a block of the approximations' float32 sums (runs.SUM_BLOCK), whose
# blocks' sums are added in float64, on both paths
_LONG = (_MANY_RNG.standard_t(4, size=(64, runs.SUM_BLOCK + 904)) * 0.02).astype(np.float32)


@pytest.mark.parametrize(("bits", "symmetric"), [(8, True), (4, False)])
@pytest.mark.parametrize("slices", [3, 64])
def test_mse_choice_on_slices_longer_than_a_sum_block_is_the_least_error_of_its_candidates(
    bits, symmetric, slices
):
    _assert_restated_mse(_LONG[:slices], bits, symmetric, "f32")


@pytest.mark.parametrize("symmetric", [True, False])
@pytest.mark.parametrize("magnitude", [1e-30, 1e-36, 1e-41, 1e30, 1e36])
@pytest.mark.parametrize("slices", [8, 80])
def test_mse_choice_at_extreme_magnitudes_is_the_least_error_of_its_candidates(
    symmetric, magnitude, slices
):
    # float32 squares of errors near 1e-30 underflow and near 1e30 overflow; 80 slices
    # take the per-slice path, 8 the per-candidate one
    rows = (MANY[:slices] * magnitude).astype(np.float32)
    _assert_restated_mse(rows, 4, symmetric, "f32")


# the `extreme` scale rule's scale is negative where a slice's extreme is positive (its
# decoded codes run the other way): rows positive-heavy and negative-heavy by turns
_LOPSIDED = np.abs(_MANY_RNG.standard_t(3, size=(80, 256))).astype(np.float32)
_LOPSIDED[:, :40] *= np.float32(-0.3)
_LOPSIDED[1::2] *= np.float32(-1.0)


@pytest.mark.parametrize("bits", [4, 8])
@pytest.mark.parametrize("slices", [8, 80])
def test_mse_choice_under_the_extreme_scale_rule_is_the_least_error_of_its_candidates(bits, slices):
    _assert_restated_mse(_LOPSIDED[:slices], bits, True, "f32", "extreme")


def _assert_restated_mse(rows, bits, symmetric, scale_dtype, rule=""):
    spec = f"int{bits}:channel:{'sym' if symmetric else 'asym'}:{scale_dtype}"
    cal = calibrate(rows, "mse", spec + (f":{rule}" if rule else ""))
    coarse = 1.0 - 0.04 * np.arange(21)
    for i, row in enumerate(rows):
        lo0, hi0 = min(float(row.min()), 0.0), max(float(row.max()), 0.0)
        errs = _restated_errors(row, lo0, hi0, coarse, bits, symmetric, scale_dtype, rule)
        best = coarse[int(np.argmin(errs))]
        fine = np.clip(best + 0.005 * np.array([j for j in range(-7, 8) if j]), 0.01, 1.0)
        cands = np.concatenate([[best], fine])
        errs = _restated_errors(row, lo0, hi0, cands, bits, symmetric, scale_dtype, rule)
        f = cands[int(np.argmin(errs))]
        np.testing.assert_allclose(cal.hi[i, 0], hi0 * f, rtol=1e-12)
        np.testing.assert_allclose(cal.lo[i, 0], lo0 * f, rtol=1e-12)


def _restated_entropy(row, bits, n_bins, n_cand):
    """TensorRT's KL search, written out with explicit distributions."""
    levels = 2 ** (bits - 1)
    amax = float(np.abs(row.astype(np.float64)).max())
    width = amax / n_bins
    b = np.minimum((np.abs(row.astype(np.float64)) / width).astype(int), n_bins - 1)
    hist = np.bincount(b, minlength=n_bins).astype(np.float64)
    best, best_c = np.inf, n_bins
    for k in range(n_cand):
        c = levels + ((n_bins - levels) * k) // (n_cand - 1)
        p = hist[:c].copy()
        p[-1] += hist[c:].sum()
        nz = p > 0
        merged = c // levels
        q = np.zeros(c)
        for m in range(levels):
            start = m * merged
            end = c if m == levels - 1 else start + merged
            norm = nz[start:end].sum()
            if norm:
                q[start:end][nz[start:end]] = hist[start:end].sum() / norm
        if np.any(q[nz] == 0):
            continue
        pn, qn = p / p.sum(), q / q.sum()
        kl = float(np.sum(pn[nz] * np.log(pn[nz] / qn[nz])))
        if kl < best - 1e-12:
            best, best_c = kl, c
    return best_c * width


@pytest.mark.parametrize(("bits", "n_bins", "rows"), [(8, 2048, 4), (4, 512, 4), (4, 512, 40)])
def test_entropy_threshold_equals_restated_kl_search(bits, n_bins, rows):
    x = RNG.standard_t(4, size=(rows, 4096 if bits == 8 else 512)).astype(np.float32)
    if rows > 4:
        # values on bin edges: |x| a multiple of the bin width (amax / n_bins)
        x[4:] = (RNG.integers(-n_bins, n_bins + 1, size=x[4:].shape) / 8).astype(np.float32)
    cal = calibrate(x, "entropy", f"int{bits}:channel")
    for i, row in enumerate(x):
        t = _restated_entropy(row, bits, n_bins, 64)
        np.testing.assert_allclose(cal.hi[i, 0], min(t, row.max()), rtol=1e-9)
        np.testing.assert_allclose(cal.lo[i, 0], max(-t, row.min()), rtol=1e-9)


def test_entropy_of_a_slice_longer_than_a_bin_chunk_equals_restated_kl_search():
    # per tensor: one slice of 3 x 2,000 values, binned in a chunk of 4,096 and a short one;
    # the first chunk narrow, the rest heavy-tailed, so that every chunk moves the threshold
    x = np.random.default_rng(7).standard_t(2, size=(3, 2000)).astype(np.float32)
    x.reshape(-1)[:4096] *= np.float32(0.05)
    cal = calibrate(x, "entropy", "int8:tensor")
    t = _restated_entropy(x.reshape(-1), 8, 2048, 64)
    np.testing.assert_allclose(cal.hi.reshape(-1)[0], min(t, x.max()), rtol=1e-9)
    np.testing.assert_allclose(cal.lo.reshape(-1)[0], max(-t, x.min()), rtol=1e-9)


def test_entropy_clips_heavy_tails_and_is_minmax_above_ten_bits():
    cal = calibrate(HEAVY, "entropy", "int8:channel")
    amax = np.abs(HEAVY).max(axis=1)
    assert np.all(np.maximum(-cal.lo[:, 0], cal.hi[:, 0]) <= amax)
    assert np.any(np.maximum(-cal.lo[:, 0], cal.hi[:, 0]) < amax)
    wide = calibrate(HEAVY, "entropy", "int12:channel")
    np.testing.assert_array_equal(wide.hi[:, 0], HEAVY.max(axis=1))


@pytest.mark.parametrize("method", ["minmax", "p99", "meanstd3", "mse", "entropy"])
def test_every_method_returns_ranges_scales_and_zero_points_in_the_parameter_shape(method):
    cal = calibrate(HEAVY, method, "int4:g128:asym")
    assert cal.lo.shape == cal.hi.shape == cal.scale.shape == cal.zero_point.shape == (12, 4)
    assert np.all(cal.lo <= cal.hi)
    assert np.all((cal.zero_point >= 0) & (cal.zero_point <= 15))
    assert np.all(cal.scale > 0)


# 64 rows and more of groups or channels of the first axis are calibrated and quantized
# in one compiled pass per task of rows (MSE, Entropy): the same bytes as the ranges that
# `calibrate` finds quantized apart
@pytest.mark.parametrize(
    "spec",
    [
        "int4:g128:asym:mse", "int4:g32:sym:mse", "int8:channel:sym:mse:bf16",
        "int4:g64:sym:extreme:mse", "int16:g128:asym:mse", "int3:g32:asym:mse:f16",
        "int4:g128:asym:entropy", "int8:g32:sym:entropy", "int8:channel:asym:entropy:f16",
        "int12:g64:entropy",
    ],
)  # fmt: skip
@pytest.mark.parametrize(
    "rows", [MANY, _LOPSIDED, MANY_HALVES[:, :128]], ids=["t3", "lopsided", "halves"]
)
def test_one_pass_calibration_of_many_rows_equals_its_ranges_quantized_apart(
    spec, rows, monkeypatch
):
    x = np.array(rows)  # a copy: the module's inputs stay as they are
    x[5] = 0.25  # a row of one value keeps it as its range
    x[9] = 0.0
    codec = AffineCodec(spec)
    # the one pass must run and find no row it leaves to the general path (above 10 bits
    # Entropy's range is MinMax's, found in MinMax's pass)
    method = codec.scheme.calibration.name
    kernel = "minmax_rows" if method == "entropy" and codec.scheme.bits > 10 else f"{method}_rows"
    returned = []
    real = getattr(runs, kernel)
    monkeypatch.setattr(runs, kernel, lambda *a: returned.append(real(*a)) or returned[-1])
    one_pass = codec.encode(x)
    assert returned == [0]
    apart = codec.encode(x, calibration=codec.calibrate(x))
    np.testing.assert_array_equal(one_pass.codes, apart.codes)
    np.testing.assert_array_equal(one_pass.scale.view(np.uint8), apart.scale.view(np.uint8))
    if not codec.scheme.symmetric:
        np.testing.assert_array_equal(one_pass.zero_point, apart.zero_point)


@pytest.mark.parametrize("method", ["mse", "entropy"])
def test_one_pass_calibration_refuses_a_nan_naming_its_index(method):
    x = np.array(MANY)
    x[70, 33] = np.nan
    with pytest.raises(NonFiniteError, match=r"index \(70, 33\)"):
        AffineCodec(f"int4:g128:asym:{method}").encode(x)


@pytest.mark.parametrize(
    ("spec", "scale"), [("int4:channel:f16:mse", "400000"), ("int4:channel:asym:f16:mse", "200000")]
)
@pytest.mark.parametrize("rows", [8, 80])
def test_mse_refuses_a_minmax_scale_its_dtype_cannot_hold_naming_the_widest(spec, scale, rows):
    x = np.array(MANY[:rows, :64])
    x[3, 5] = 3e6  # one channel's MinMax scale (3e6 / 7.5, / 15) is past float16's largest
    with pytest.raises(UsageError, match=f"a scale of {scale} does not fit f16 scales"):
        AffineCodec(spec).encode(x)
