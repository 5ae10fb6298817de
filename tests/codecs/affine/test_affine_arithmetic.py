"""Codes, scales and zero points against an independent float64 restatement; round trips;
bad input."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from restated import minmax_ranges, quantize, slice_index

import bundler
from bundler.codecs.affine import AffineCodec, SchemeError, calibrate
from bundler.errors import NonFiniteError, ShapeError, UsageError

RNG = np.random.default_rng(11)
# a weight-like matrix with outliers, and a 3-D (conv-like) tensor
MATRIX = (RNG.standard_normal((24, 256)) * np.linspace(0.01, 2, 24)[:, None]).astype(np.float32)
MATRIX[3, 17] = 9.0
CONV = RNG.standard_normal((6, 4, 40)).astype(np.float32)

SCHEMES = [
    (bits, sym, gran)
    for bits in (2, 3, 4, 8, 16)
    for sym in (True, False)
    for gran in ("tensor", "channel", "g32")
]


def _codec(bits, sym, gran, extra=""):
    return AffineCodec(f"int{bits}:{gran}:{'sym' if sym else 'asym'}{extra}")


def _granularity(gran):
    return ("group", int(gran[1:])) if gran.startswith("g") else (gran, 128)


@pytest.mark.parametrize(("bits", "sym", "gran"), SCHEMES)
@pytest.mark.parametrize("scale_dtype", ["f32", "f16", "bf16"])
def test_minmax_codes_scales_zero_points_equal_float64_restatement(bits, sym, gran, scale_dtype):
    codec = _codec(bits, sym, gran, "" if scale_dtype == "f32" else f":{scale_dtype}")
    granularity, group = _granularity(gran)
    lo, hi = minmax_ranges(MATRIX, granularity, 0, group)
    codes, scale, zero = quantize(MATRIX, bits, sym, granularity, lo, hi, 0, group, scale_dtype)
    enc = codec.encode(MATRIX)
    assert enc.scale.dtype == codec.scale_dtype
    assert enc.scale.tobytes() == scale.astype(codec.scale_dtype).tobytes()
    np.testing.assert_array_equal(enc.codes.astype(np.int64), codes)
    if sym:
        assert enc.zero_point is None
        assert enc.codes.min() >= -(2 ** (bits - 1)) and enc.codes.max() <= 2 ** (bits - 1) - 1
    else:
        np.testing.assert_array_equal(enc.zero_point.astype(np.int64), zero)
        assert enc.codes.min() >= 0 and enc.codes.max() <= 2**bits - 1
    # decoding is (q - z) * s in float32
    s = scale.astype(np.float32)
    sid, _ = slice_index(MATRIX.shape, granularity, 0, group)
    want = (codes.reshape(-1) - zero.reshape(-1)[sid]).astype(np.float32) * s.reshape(-1)[sid]
    np.testing.assert_array_equal(enc.decode(), want.reshape(MATRIX.shape))


@pytest.mark.parametrize("bits", [2, 3, 4, 8, 16])
@pytest.mark.parametrize("gran", ["tensor", "channel", "g32", "g8"])
@pytest.mark.parametrize("scale_dtype", ["f32", "f16", "bf16"])
def test_extreme_scale_rule_equals_float64_restatement(bits, gran, scale_dtype):
    dtype = "" if scale_dtype == "f32" else f":{scale_dtype}"
    codec = _codec(bits, True, gran, ":extreme" + dtype)
    granularity, group = _granularity(gran)
    lo, hi = minmax_ranges(MATRIX, granularity, 0, group)
    codes, scale, _ = quantize(
        MATRIX, bits, True, granularity, lo, hi, 0, group, scale_dtype, extreme=True
    )
    enc = codec.encode(MATRIX)
    assert enc.scale.tobytes() == scale.astype(codec.scale_dtype).tobytes()
    np.testing.assert_array_equal(enc.codes.astype(np.int64), codes)
    assert enc.zero_point is None
    # the value of largest magnitude of every slice is the lowest code, exactly (a float32
    # scale is e / qmin exactly; float16 and bfloat16 round it)
    sid, _ = slice_index(MATRIX.shape, granularity, 0, group)
    flat, q = MATRIX.reshape(-1), enc.codes.reshape(-1)
    if scale_dtype != "f32":
        return
    for i in range(len(lo)):
        values = flat[sid == i]
        at = np.argmax(np.abs(values)) if np.abs(values).max() > -values.min() else values.argmin()
        assert q[sid == i][at] == -(2 ** (bits - 1))
    # half a step, but a whole one for values of the other sign beyond qmax * scale
    np.testing.assert_allclose(enc.decode(), MATRIX, atol=float(np.abs(scale).max()) * 1.0001)


@pytest.mark.parametrize("spec", ["int4:g32:extreme:mse", "int8:channel:extreme:entropy",
                                  "int4:tensor:extreme:p99.9"])  # fmt: skip
def test_extreme_scale_rule_under_calibration_maps_the_calibrated_extreme_to_the_lowest_code(spec):
    codec = AffineCodec(spec)
    cal = codec.calibrate(MATRIX)
    e = np.where(-np.minimum(cal.lo, 0) >= np.maximum(cal.hi, 0), np.minimum(cal.lo, 0),
                 np.maximum(cal.hi, 0))  # fmt: skip
    want = (e / codec.scheme.qmin).astype(np.float32)
    assert cal.scale.tobytes() == np.where(cal.lo == cal.hi, np.abs(cal.lo), want).astype(
        np.float32).tobytes()  # fmt: skip
    # MSE keeps MinMax's range among its candidates: never worse than it under this rule too
    if "mse" in spec:
        mm = AffineCodec(codec.scheme.replace(calibration="minmax"))
        err = lambda c: float(np.sum((c.decode(c.encode(MATRIX)) - MATRIX) ** 2.0))  # noqa: E731
        assert err(codec) <= err(mm)


def test_extreme_scale_rule_is_symmetric_only_and_round_trips_its_configuration():
    codec = bundler.codec("int4:g32:sym:extreme")
    assert codec.name == "int4:g32:sym:extreme:minmax"
    assert codec.config()["scale_rule"] == "extreme"
    assert bundler.codec(codec.config()) == codec != bundler.codec("int4:g32")
    assert bundler.codec("int4:g32").config()["scale_rule"] == "half_range"
    with pytest.raises(SchemeError, match="symmetric"):
        AffineCodec("int4:g32:asym:extreme")
    with pytest.raises(SchemeError, match="scale rule"):
        AffineCodec({**codec.config(), "scale_rule": "absmax"})


@pytest.mark.parametrize("axis", [0, 1, 2, -1])
@pytest.mark.parametrize("sym", [True, False])
def test_channel_along_any_axis_equals_restatement(axis, sym):
    codec = AffineCodec(f"int8:channel{axis % 3}:{'sym' if sym else 'asym'}")
    lo, hi = minmax_ranges(CONV, "channel", axis % 3)
    codes, scale, zero = quantize(CONV, 8, sym, "channel", lo, hi, axis % 3)
    enc = codec.encode(CONV)
    assert enc.scale.shape == scale.shape
    np.testing.assert_array_equal(enc.codes.astype(np.int64), codes)
    np.testing.assert_array_equal(enc.scale, scale)
    if not sym:
        np.testing.assert_array_equal(enc.zero_point.astype(np.int64), zero)


@pytest.mark.parametrize("method", ["p99.9", "p2-97", "meanstd2", "meanstd3"])
@pytest.mark.parametrize("gran", ["tensor", "channel", "g64"])
def test_percentile_and_meanstd_ranges_equal_restatement(method, gran):
    granularity, group = _granularity(gran)
    sid, pshape = slice_index(MATRIX.shape, granularity, 0, group)
    flat = MATRIX.reshape(-1).astype(np.float64)
    lo, hi = [], []
    for i in range(int(np.prod(pshape))):
        v = flat[sid == i]
        if method.startswith("p"):
            a, b = (0.1, 99.9) if method == "p99.9" else (2.0, 97.0)
            lo.append(np.percentile(v, a))
            hi.append(np.percentile(v, b))
        else:
            k = float(method[7:])
            lo.append(max(v.min(), v.mean() - k * v.std()))
            hi.append(min(v.max(), v.mean() + k * v.std()))
    cal = calibrate(MATRIX, method, f"int8:{gran}")
    np.testing.assert_allclose(cal.lo.reshape(-1), lo, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(cal.hi.reshape(-1), hi, rtol=1e-12, atol=1e-12)
    codes, scale, _ = quantize(MATRIX, 8, True, granularity, cal.lo.reshape(-1),
                               cal.hi.reshape(-1), 0, group)  # fmt: skip
    enc = AffineCodec(f"int8:{gran}:{method}").encode(MATRIX)
    np.testing.assert_array_equal(enc.codes.astype(np.int64), codes)
    np.testing.assert_array_equal(enc.scale, scale)


def test_percentile_clips_the_outlier_minmax_keeps():
    cal_mm = calibrate(MATRIX, "minmax", "int8:channel")
    cal_p = calibrate(MATRIX, "p1-99", "int8:channel")
    assert cal_mm.hi[3, 0] == 9.0
    assert cal_p.hi[3, 0] < 9.0


@pytest.mark.parametrize(
    "spec",
    ["int8:tensor", "int4:channel:asym", "int4:g128:asym", "int8:g32:p99.9", "int16:channel"],
)
def test_encoding_is_deterministic_and_round_trip_error_is_bounded_by_half_a_step(spec):
    codec = AffineCodec(spec)
    a, b = codec.encode(MATRIX), codec.encode(MATRIX.copy())
    assert a.codes.tobytes() == b.codes.tobytes() and a.scale.tobytes() == b.scale.tobytes()
    cal = codec.calibrate(MATRIX)
    err = np.abs(codec.decode(a) - MATRIX)
    # inside the calibrated range the error is at most half a step (plus float32 rounding)
    granularity, group = _granularity(spec.split(":")[1])
    sid, _ = slice_index(MATRIX.shape, granularity, 0, group)
    step = cal.scale.astype(np.float64).reshape(-1)[sid].reshape(MATRIX.shape)
    lo = np.minimum(cal.lo, 0).reshape(-1)[sid].reshape(MATRIX.shape)
    hi = np.maximum(cal.hi, 0).reshape(-1)[sid].reshape(MATRIX.shape)
    inside = (lo <= MATRIX) & (hi - step / 2 >= MATRIX)
    assert np.all(err[inside] <= step[inside] * 0.5 * (1 + 1e-6) + 1e-7)


@pytest.mark.parametrize("value", [0.0, 0.7, -3.25, 1e-3])
@pytest.mark.parametrize("spec", ["int8:tensor", "int4:channel:asym", "int4:g32", "int2:g8:asym"])
def test_all_equal_slice_round_trips_exactly(value, spec):
    x = np.full((4, 64), value, dtype=np.float32)
    enc = AffineCodec(spec).encode(x)
    assert np.all(np.isfinite(enc.scale.astype(np.float32)))
    np.testing.assert_array_equal(enc.decode(), x)


def test_zero_is_exactly_representable():
    x = np.array([[0.0, 0.3, 0.9, 1.7, 0.0]], dtype=np.float32)  # all positive but zeros
    for spec in ["int4:tensor:asym", "int8:tensor", "int3:tensor:asym"]:
        enc = AffineCodec(spec).encode(x)
        assert enc.decode()[0, 0] == 0.0 and enc.decode()[0, 4] == 0.0


def test_round_half_to_even():
    # scale 1 (range [-127.5, 127.5] gives 127.5 / 127.5): x = k + 0.5 rounds to the even k
    x = np.array([[-127.5, 0.5, 1.5, 2.5, -0.5, -1.5, 127.5]], dtype=np.float32)
    enc = AffineCodec("int8:tensor").encode(x)
    assert enc.scale[0] == 1.0
    assert enc.codes.tolist() == [[-128, 0, 2, 2, 0, -2, 127]]


def _next_to_half_integers(rng, x, bits, symmetric):
    """x with its rows' values past the first two (which hold each row's range) put next
    to (k + 1/2) * scale, the scales and zero points the restatement gives that range: the
    float32 products and the float32 values a few steps either side of them, whose
    float32 quotient may land on the half-integer while the exact one does not."""
    lo, hi = minmax_ranges(x, "channel")
    _, scale, zero = quantize(x, bits, symmetric, "channel", lo, hi)
    qmin = -(2 ** (bits - 1)) if symmetric else 0
    k = rng.integers(qmin, qmin + 2**bits - 1, (x.shape[0], x.shape[1] - 2)) - zero.reshape(-1, 1)
    s = scale.reshape(-1, 1).astype(np.float64)
    near = ((k + 0.5) * s).astype(np.float32)
    near += rng.integers(-2, 3, near.shape) * np.spacing(near)
    x[:, 2:] = np.clip(near, lo.reshape(-1, 1), hi.reshape(-1, 1))
    return x, s


@settings(max_examples=60, deadline=None)
@given(
    seed=st.integers(0, 2**32 - 1),
    bits=st.sampled_from([4, 8, 16]),
    symmetric=st.booleans(),
    magnitude=st.floats(1e-30, 1e30),
)
def test_quotients_next_to_a_half_integer_round_as_the_float64_restatement(
    seed, bits, symmetric, magnitude
):
    rng = np.random.default_rng(seed)
    x = (rng.uniform(-0.5, 0.5, (8, 64)) * magnitude).astype(np.float32)
    x[:, 0], x[:, 1] = -magnitude, magnitude * 0.75  # the rows' range
    x, s = _next_to_half_integers(rng, x, bits, symmetric)
    q32 = x / s.astype(np.float32)
    assert np.any(np.abs(q32 - np.rint(q32)) == 0.5)  # the float32 quotient does land on ties
    enc = _codec(bits, symmetric, "channel").encode(x)
    lo, hi = minmax_ranges(x, "channel")
    codes, scale, zero = quantize(x, bits, symmetric, "channel", lo, hi)
    np.testing.assert_array_equal(enc.scale.reshape(-1), scale.reshape(-1))
    np.testing.assert_array_equal(enc.codes.astype(np.int64), codes)
    if not symmetric:
        np.testing.assert_array_equal(enc.zero_point.reshape(-1), zero.reshape(-1))
    # the same channels as the last axis: quantized down the columns
    sym = "sym" if symmetric else "asym"
    down = AffineCodec(f"int{bits}:channel1:{sym}").encode(np.ascontiguousarray(x.T))
    np.testing.assert_array_equal(down.codes.T.astype(np.int64), codes)


@pytest.mark.parametrize(
    ("index", "value"), [((0, 0), np.nan), ((5, 200), np.inf), ((23, 255), -np.inf)]
)
@pytest.mark.parametrize("spec", ["int8:tensor", "int4:g32:asym", "int8:channel:mse"])
def test_non_finite_input_is_a_typed_error_with_its_position(index, value, spec):
    x = MATRIX.copy()
    x[index] = value
    with pytest.raises(NonFiniteError) as e:
        AffineCodec(spec).encode(x)
    assert e.value.index == index
    assert str(index) in str(e.value)


@pytest.mark.parametrize(
    ("spec", "shape", "error"),
    [
        ("int8:tensor", (0, 16), ShapeError),
        ("int4:g32", (3, 48), ShapeError),
        ("int8:channel3", (3, 48), SchemeError),
        ("int8:channel2", (3, 48), SchemeError),
    ],
)
def test_bad_shapes_are_typed_errors(spec, shape, error):
    with pytest.raises(error) as e:
        AffineCodec(spec).encode(np.ones(shape, np.float32))
    assert isinstance(e.value, UsageError)


@pytest.mark.parametrize(
    "spec", ["int1", "int17", "int32", "int4:g12", "int4:g0", "int4:fast", "int4:p101", "g128"]
)
def test_bad_configurations_are_typed_errors(spec):
    with pytest.raises(UsageError):
        AffineCodec(spec)


@pytest.mark.parametrize(
    "spec",
    ["int4:g128:asym:mse", "int8:channel", "int8:channel1:p99.9:f16", "int2:tensor:entropy",
     "int16:g64:asym:meanstd2.5:bf16", "int4:g32:p1-99"],
)  # fmt: skip
def test_configuration_is_identity(spec):
    codec = bundler.codec(spec)
    assert isinstance(codec, AffineCodec)
    assert bundler.codec(codec.config()) == codec
    assert bundler.codec(codec.name) == codec
    assert hash(bundler.codec(codec.config())) == hash(codec)
    import json

    assert bundler.codec(json.loads(json.dumps(codec.config()))) == codec


def test_short_form_defaults_and_aliases():
    assert bundler.codec("int8").name == "int8:tensor:sym:minmax"
    assert bundler.codec("uint4:g128").name == "int4:g128:asym:minmax"
    assert bundler.codec("INT4:ASYM:G64:MSE").name == "int4:g64:asym:mse"
    assert bundler.codec("int8:p99.9").config()["calibration"] == {
        "method": "percentile", "lower": 0.1, "upper": 99.9,
    }  # fmt: skip
    assert bundler.codec("q4_0").name == "q4_0"  # the GGML names are unchanged


def test_integer_input_dtypes_are_accepted():
    x = (np.arange(64, dtype=np.int16) - 32).reshape(2, 32)
    enc = AffineCodec("int8:tensor").encode(x)
    np.testing.assert_allclose(enc.decode(), x, atol=enc.scale[0] / 2)


@pytest.mark.parametrize("spec", ["int4:g32:sym:extreme", "int4:g32:asym", "int8:g64:f16",
                                  "int8:g16:asym:div32"])  # fmt: skip
def test_blocks_down_the_first_axis_are_the_groups_of_the_transposed_matrix(spec):
    from bundler.codecs.affine.codec import encode_blocks_down

    codec = AffineCodec(spec)
    x = np.ascontiguousarray(MATRIX.T)  # [256, 24]: blocks down the 256
    codes, scale, zero = encode_blocks_down(codec, x, codec.scheme.group_size)
    groups = codec.encode(MATRIX)
    assert np.array_equal(codes, groups.codes.T)
    assert scale.dtype == groups.scale.dtype and np.array_equal(scale, groups.scale.T)
    assert (zero is None) == (groups.zero_point is None)
    if zero is not None:
        assert np.array_equal(zero, groups.zero_point.T)
    if codec.scheme.bits == 4:
        packed, _, _ = encode_blocks_down(codec, x, codec.scheme.group_size, nibbles=True)
        unsigned = groups.codes.astype(np.int64) - codec.scheme.qmin
        want = unsigned.reshape(24, -1, 2)
        assert np.array_equal(packed.reshape(24, -1), want[..., 0] | (want[..., 1] << 4))
    bad = x.copy()
    bad[70, 5] = np.nan
    with pytest.raises(NonFiniteError, match=r"\(5, 70\)|\(70, 5\)"):
        encode_blocks_down(codec, bad, codec.scheme.group_size)


@pytest.mark.parametrize(
    "spec",
    ["int4:g32:asym", "int4:g32:sym:extreme", "int8:channel", "int8:channel1:asym",
     "int4:g16:bf16:asym", "int8:tensor", "int4:g32:asym:mse", "int8:channel:entropy",
     "int16:g8:f16"],
)  # fmt: skip
def test_encoding_into_an_earlier_encoding_overwrites_its_arrays_with_a_fresh_encodings(spec):
    codec = AffineCodec(spec)
    out = codec.encode(CONV.reshape(24, 40)[:, :32] * 7 + 1)
    arrays = (out.codes, out.scale, out.zero_point)
    x = MATRIX[:, :32]
    fresh = codec.encode(x)
    again = codec.encode(x, out=out)
    assert again is out
    now = (again.codes, again.scale, again.zero_point)
    assert all(a is b for a, b in zip(now, arrays, strict=True))
    np.testing.assert_array_equal(again.codes, fresh.codes)
    np.testing.assert_array_equal(again.scale, fresh.scale)
    if codec.scheme.symmetric:
        assert again.zero_point is None
    else:
        np.testing.assert_array_equal(again.zero_point, fresh.zero_point)
    cal = codec.calibrate(x)
    _scribble(out)
    assert codec.encode(x, cal, out=out) is out
    np.testing.assert_array_equal(out.codes, fresh.codes)
    np.testing.assert_array_equal(out.scale, fresh.scale)


def _scribble(encoded):
    """Every array of `encoded` filled with values no encoding here gives."""
    encoded.codes[...] = 3
    encoded.scale[...] = -1
    if encoded.zero_point is not None:
        encoded.zero_point[...] = 1


@pytest.mark.parametrize("spec", ["int4:g128:asym", "int8:channel", "int4:g32:asym:entropy"])
def test_encoding_a_real_weight_into_an_earlier_encoding_equals_a_fresh_one(
    spec, minilm_safetensors
):
    from safetensors.numpy import load_file

    weights = load_file(minilm_safetensors)
    w = weights["encoder.layer.0.intermediate.dense.weight"]
    codec = AffineCodec(spec)
    out = codec.encode(weights["encoder.layer.1.intermediate.dense.weight"])
    _scribble(out)
    fresh = codec.encode(w)
    assert codec.encode(w, out=out) is out
    np.testing.assert_array_equal(out.codes, fresh.codes)
    np.testing.assert_array_equal(out.scale, fresh.scale)
    if fresh.zero_point is not None:
        np.testing.assert_array_equal(out.zero_point, fresh.zero_point)


@pytest.mark.parametrize(
    ("spec", "shape", "other"),
    [("int4:g32", (24, 64), None), ("int4:g32", (24, 32), "int4:g32:asym"),
     ("int8:channel", (24, 32), "int8:channel:f16")],
)  # fmt: skip
def test_an_output_of_another_shape_or_codec_is_refused(spec, shape, other):
    codec = AffineCodec(spec)
    out = AffineCodec(other or spec).encode(np.ones(shape, np.float32))
    with pytest.raises(UsageError, match="out must be"):
        codec.encode(MATRIX[:, :32], out=out)
    frozen = codec.encode(MATRIX[:, :32])
    frozen.codes.flags.writeable = False
    with pytest.raises(UsageError, match="out must be"):
        codec.encode(MATRIX[:, :32], out=frozen)
    with pytest.raises(UsageError, match=r"out must be.*got ndarray"):
        codec.encode(MATRIX[:, :32], out=np.empty((24, 32), np.int8))
