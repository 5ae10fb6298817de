"""The gguf package's `quants` module as an independent oracle for the codecs it implements."""

from __future__ import annotations

import warnings

import edge_cases
import gguf
import numpy as np
import pytest
from gguf import GGMLQuantizationType as T
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

import bundler

#: Codecs the gguf package can encode (and is byte-identical to the C reference on).
ENCODABLE = ["f16", "bf16", "q4_0", "q4_1", "q5_0", "q5_1", "q8_0"]
#: Codecs the gguf package can only decode.
DECODE_ONLY = ["q2_k", "q3_k", "q4_k", "q5_k", "q6_k"]


def _gguf_quantize(x: np.ndarray, name: str) -> np.ndarray:
    with warnings.catch_warnings(), np.errstate(all="ignore"):
        warnings.simplefilter("ignore", RuntimeWarning)
        return np.asarray(gguf.quants.quantize(x, T[name.upper()])).view(np.uint8)


def _gguf_dequantize(raw: np.ndarray, name: str) -> np.ndarray:
    with warnings.catch_warnings(), np.errstate(all="ignore"):
        warnings.simplefilter("ignore", RuntimeWarning)
        return gguf.quants.dequantize(raw, T[name.upper()]).astype(np.float32)


def _bits(a: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(a, dtype=np.float32).view(np.uint32)


def assert_matches_gguf(x: np.ndarray, name: str) -> None:
    ours = bundler.encode(x, name)
    theirs = _gguf_quantize(x, name)
    assert ours.shape == theirs.reshape(ours.shape).shape
    mismatch = np.flatnonzero(ours.reshape(-1) != theirs.reshape(-1))
    assert mismatch.size == 0, f"{name}: {mismatch.size} bytes differ, first at {mismatch[:5]}"
    decoded = bundler.decode(ours, name)
    np.testing.assert_array_equal(_bits(decoded), _bits(_gguf_dequantize(theirs, name)))


@pytest.mark.parametrize("case", sorted(edge_cases.CASES))
@pytest.mark.parametrize("name", ENCODABLE)
def test_encode_and_decode_match_gguf_bit_for_bit_on_edge_case(name, case):
    assert_matches_gguf(edge_cases.CASES[case](), name)


@pytest.mark.parametrize("name", ENCODABLE)
def test_encode_matches_gguf_on_four_million_random_values(name):
    rng = np.random.default_rng(7)
    parts = [
        rng.standard_normal((256, 4096)) * 0.02,
        rng.uniform(-100, 100, (256, 4096)),
        rng.standard_t(2, (256, 4096)),
        rng.laplace(0, 1e-3, (256, 4096)),
    ]
    assert_matches_gguf(np.concatenate(parts).astype(np.float32), name)


@pytest.mark.parametrize("name", ENCODABLE)
def test_strided_and_fortran_input_encodes_like_its_contiguous_copy(name):
    base = edge_cases.normal_weights(32, 512)
    for view in (base[:, ::2], base[::3], np.asfortranarray(base), base.T.copy().T):
        assert np.array_equal(bundler.encode(view, name), _gguf_quantize(view.copy(), name))


@pytest.mark.parametrize("name", ENCODABLE)
def test_float64_input_is_rounded_to_float32_once_before_encoding(name):
    x64 = edge_cases.normal_weights(4, 256).astype(np.float64) * (1 + 1e-9)
    assert np.array_equal(bundler.encode(x64, name), _gguf_quantize(x64.astype(np.float32), name))


@pytest.mark.parametrize("name", DECODE_ONLY)
def test_decode_matches_gguf_dequantize_for_k_quant_bytes(name):
    codec = bundler.codec(name)
    try:
        codec.kernel()
    except (ImportError, KeyError):
        pytest.skip(f"{name} kernels not built into this tree")
    raw = bundler.encode(edge_cases.normal_weights(16, 1024), name)
    np.testing.assert_array_equal(
        _bits(bundler.decode(raw, name)), _bits(_gguf_dequantize(raw, name))
    )


BIG = float(np.float32(1e30))
finite32 = st.floats(min_value=-BIG, max_value=BIG, allow_nan=False, allow_infinity=False, width=32)


@settings(max_examples=150, deadline=None)
@given(
    name=st.sampled_from(ENCODABLE),
    x=hnp.arrays(
        np.float32, st.tuples(st.integers(1, 4), st.sampled_from([32, 64, 96])), elements=finite32
    ),
)
def test_any_finite_float32_block_encodes_exactly_like_gguf(name, x):
    # -0.0 becomes +0.0: gguf differs from the C reference on blocks of negative zeros
    # (see the test below), so those are pinned against the reference's rule instead.
    assert_matches_gguf(x + np.float32(0.0), name)


@pytest.mark.parametrize("name", ["q4_0", "q5_0"])
def test_negative_zero_block_keeps_the_c_reference_scale_where_gguf_differs(name):
    # C starts its signed max at +0.0 and only replaces it on a strictly larger |x|, so a
    # block of -0.0 gets d = +0.0 / -8 = -0.0 (bytes 00 80); gguf takes the first element
    # (-0.0) and writes +0.0. The C oracle tests confirm the reference's bytes.
    x = np.full(32, -0.0, np.float32)
    assert bundler.encode(x, name).tobytes()[:2] == b"\x00\x80"
    assert _gguf_quantize(x, name).tobytes()[:2] == b"\x00\x00"


@pytest.mark.parametrize("name", ["q4_1", "q5_1"])
def test_signed_zero_minimum_keeps_the_first_zero_like_c_where_gguf_differs(name):
    # C replaces its minimum only on a strictly smaller value, so of -0.0 and +0.0 the
    # first stays and its sign is stored in m; numpy's min (gguf) may return either.
    # The C oracle tests run the same rows against the reference library.
    rows = bundler.encode(edge_cases.signed_zero_extremes(), name)
    assert [bytes(rows[r, 2:4]) for r in (0, 1)] == [b"\x00\x80", b"\x00\x00"]
