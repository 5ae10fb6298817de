"""The compiled float32 -> half conversion used inside the block kernels."""

from __future__ import annotations

import numpy as np
from numba import njit, prange

from bundler.codecs.halfs import f32_to_f16_bits
from bundler.codecs.halftable import HALF_TO_F32


@njit(parallel=True, cache=True)
def _convert(x, out):
    for i in prange(x.size):
        out[i] = f32_to_f16_bits(x[i])


def _check_patterns(bits: np.ndarray) -> None:
    x = bits.view(np.float32)
    out = np.empty(x.size, np.uint16)
    _convert(x, out)
    with np.errstate(all="ignore"):
        ref = x.astype(np.float16).view(np.uint16)
    nan = np.isnan(x)
    np.testing.assert_array_equal(out[~nan], ref[~nan])
    # NaN becomes the quiet NaN 0x7E00 with its sign, as ggml's portable conversion does
    np.testing.assert_array_equal(out[nan], np.where(bits[nan] >> 31, 0xFE00, 0x7E00))


def test_every_float32_pattern_near_half_boundaries_rounds_like_numpy():
    # all patterns around the exponents where halves are subnormal, normal, or overflow
    edges = []
    for exponent in (0x33, 0x38, 0x47, 0x7F):  # 2^-25, 2^-14, 2^16 and inf/NaN neighbourhoods
        hi = np.uint32(exponent << 23)
        edges.append(np.arange(hi - (1 << 20), hi + (1 << 20), dtype=np.uint32))
    bits = np.concatenate(edges)
    _check_patterns(np.concatenate([bits, bits | np.uint32(0x80000000)]))


def test_sixteen_million_random_float32_patterns_round_like_numpy():
    rng = np.random.default_rng(3)
    _check_patterns(rng.integers(0, 2**32, size=1 << 24, dtype=np.uint32))


def test_half_table_widens_every_half_exactly():
    halves = np.arange(1 << 16, dtype=np.uint32).astype(np.uint16)
    ref = halves.view(np.float16).astype(np.float32)
    np.testing.assert_array_equal(HALF_TO_F32.view(np.uint32), ref.view(np.uint32))
