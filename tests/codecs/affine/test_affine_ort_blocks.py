"""The `extreme` scale rule against ONNX Runtime's own 4-bit block quantizer
(`MatMulNBitsQuantizer`'s C++ `qbits_block_quant`) on the same matrices: scales equal bit for
bit, codes equal except where the two arithmetics differ (ONNX Runtime multiplies by the
float32 reciprocal of the scale and rounds half away from zero; bundler divides exactly and
rounds half to even), which is only next to a half-integer quotient. One documented
difference: a block whose values are all one value c gets scale |c| (c is code +-1), where
ONNX Runtime's gives c / -8 (c is code -8); both decode c exactly."""

from __future__ import annotations

import numpy as np
import onnxruntime  # noqa: F401  (a test dependency: its absence fails, never skips)
import pytest
from onnxruntime.quantization.matmul_nbits_quantizer import (
    DefaultWeightOnlyQuantConfig,
    DefaultWeightOnlyQuantizer,
)

from bundler.bench.affine import ort_4bit_unpack
from bundler.codecs.affine import AffineCodec

RNG = np.random.default_rng(5)


def _matrix(rows: int, cols: int) -> np.ndarray:
    x = RNG.standard_normal((rows, cols)).astype(np.float32) * np.float32(0.02)
    x[::7] *= np.float32(30)  # some rows of another magnitude
    x[3, 5] = 0.9  # a lone positive extreme, and an all-equal group
    x[5, :64] = -0.25
    return x


def _ort(w: np.ndarray, block: int, symmetric: bool):
    """ONNX Runtime's codes [N, K] (unsigned, zero point 8 when symmetric), scales
    [N, K / block] and zero points of the MatMul weight `w.T` ([K, N])."""
    config = DefaultWeightOnlyQuantConfig(block_size=block, is_symmetric=symmetric, bits=4)
    packed, scales, zero = DefaultWeightOnlyQuantizer(config).qbits_block_quant(
        np.ascontiguousarray(w.T)
    )
    codes, zero = ort_4bit_unpack(packed, zero, symmetric)
    return codes, scales, zero


def _constant(w: np.ndarray, block: int) -> np.ndarray:
    groups = w.reshape(w.shape[0], -1, block)
    return groups.min(axis=2) == groups.max(axis=2)


def _near_half(w: np.ndarray, scale: np.ndarray, block: int) -> np.ndarray:
    """Where the exact quotient w / scale is within 2^-20 of a half-integer."""
    q = w.astype(np.float64) / np.repeat(scale.astype(np.float64), block, axis=1)
    return np.abs(np.abs(q - np.floor(q)) - 0.5) < 2.0**-20


@pytest.mark.parametrize("block", [16, 32, 64, 128])
def test_extreme_rule_scales_equal_onnxruntime_block_quantizer_and_codes_agree(block):
    w = _matrix(48, 256)
    enc = AffineCodec(f"int4:g{block}:sym:extreme").encode(w)
    codes, scales, _ = _ort(w, block, symmetric=True)
    groups = w.reshape(w.shape[0], -1, block)
    constant = _constant(w, block)
    assert constant.sum() == 64 // block
    assert enc.scale[~constant].tobytes() == scales[~constant].astype(np.float32).tobytes()
    assert np.array_equal(enc.scale[constant], np.abs(groups[constant][:, 0]))
    ours = enc.codes.astype(np.int64) + 8  # ONNX Runtime's unsigned codes, zero point 8
    differ = (ours != codes) & ~np.repeat(constant, block, axis=1)
    assert not (differ & ~_near_half(w, enc.scale, block)).any()
    assert differ.sum() <= max(2, w.size // 10_000)
    # the same error, so at these settings bundler's error is no higher
    decoded = (codes - 8) * np.repeat(scales, block, axis=1)
    assert np.sum((enc.decode() - w) ** 2.0) <= np.sum((decoded - w) ** 2.0) * (1 + 1e-9)


@pytest.mark.parametrize("block", [32, 128])
def test_half_range_rule_is_not_onnxruntime_s_but_asymmetric_blocks_are(block):
    w = _matrix(48, 256)
    default = AffineCodec(f"int4:g{block}:sym").encode(w)
    _, scales, _ = _ort(w, block, symmetric=True)
    assert not np.array_equal(np.abs(default.scale), np.abs(scales))  # max / 7.5, not / 8
    enc = AffineCodec(f"int4:g{block}:asym").encode(w)
    codes, scales, zero = _ort(w, block, symmetric=False)
    # ONNX Runtime computes (max - min) / 15 in float32, bundler in float64: 1 ulp at most
    constant = _constant(w, block)
    ulps = np.abs(enc.scale.view(np.int32).astype(np.int64) - scales.view(np.int32))
    assert ulps[~constant].max() <= 1
    same = (enc.scale == scales) & (enc.zero_point.astype(np.int64) == zero) & ~constant
    assert same.mean() > 0.5  # the others differ by that ulp
    rows_same = np.repeat(same, block, axis=1)
    differ = (enc.codes.astype(np.int64) != codes) & rows_same
    assert not (differ & ~_near_half(w, enc.scale, block)).any()
