"""K-quants (Q2_K..Q6_K, Q8_K): byte-exact with ggml's reference quantizers, bit-exact decode.

Oracles: the C library (`tools.reference.ggml_c`, ggml-base built from the llama-cpp-python
sources) for encode and decode, and the gguf package's dequantizers for decode. Golden files
in tests/codecs/golden/kquants/ (made by make_kquant_golden.py) pin the bytes forever.
"""

from __future__ import annotations

import importlib.util
import warnings
from pathlib import Path

import gguf
import kquant_cases
import numba
import numpy as np
import pytest
from gguf import GGMLQuantizationType as T
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp
from test_c_oracle import ggml_c  # noqa: F401  (the C library fixture)

import bundler
from bundler.codecs import registry
from bundler.errors import NonFiniteError

K_QUANTS = ["q2_k", "q3_k", "q4_k", "q5_k", "q6_k", "q8_k"]
#: The K-quants the gguf package can dequantize.
GGUF_DECODES = ["q2_k", "q3_k", "q4_k", "q5_k", "q6_k"]
GOLDEN = Path(__file__).parent / "golden" / "kquants"


def _bits(a: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(a, dtype=np.float32).view(np.uint32)


def _gguf_dequantize(raw: np.ndarray, name: str) -> np.ndarray:
    with warnings.catch_warnings(), np.errstate(all="ignore"):
        warnings.simplefilter("ignore", RuntimeWarning)
        return gguf.quants.dequantize(raw, T[name.upper()]).astype(np.float32)


def assert_matches_c(c_lib, x: np.ndarray, name: str) -> np.ndarray:
    """Our bytes equal the C reference's, and both decoders give the same bits."""
    codec = registry.get(name)
    ours = codec.encode(x)
    rows = x.reshape(-1, x.shape[-1])
    theirs = c_lib.quantize(name, rows, threads=2).reshape(ours.shape)
    if not np.array_equal(ours, theirs):
        size = codec.facts.type_size
        bad = np.flatnonzero((ours.reshape(-1, size) != theirs.reshape(-1, size)).any(axis=1))
        raise AssertionError(f"{name}: {bad.size} super-blocks differ, first {bad[:5]}")
    with np.errstate(all="ignore"):
        decoded = codec.decode(ours, x.shape)
        expected = c_lib.dequantize(name, theirs, x.shape, threads=2)
    np.testing.assert_array_equal(_bits(decoded), _bits(expected))
    return ours


@pytest.fixture(scope="module")
def sixteen_million() -> list[np.ndarray]:
    """16,777,216 random float32 values over several distributions and shapes."""
    rng = np.random.default_rng(16)
    parts = [
        rng.standard_normal((2048, 2048)) * 0.02,  # 4M, typical weights
        (rng.standard_normal((1024, 4096)) * 0.02).astype(np.float32).view(np.uint32)
        & 0xFFFF0000,  # 4M, bf16-rounded
        rng.uniform(-1, 1, (16, 131072)),  # 2M, long rows
        rng.laplace(0, 1e-3, (4096, 512)),  # 2M, sharp peaks
        rng.standard_t(3, (8192, 256)) * np.logspace(-6, 6, 8192)[:, None],  # 2M, row scales
        rng.standard_normal((2, 1024, 1024)) * 1e-5,  # 2M, 3-D, small values
    ]
    parts[1] = parts[1].astype(np.uint32).view(np.float32)
    out = [np.ascontiguousarray(p, dtype=np.float32) for p in parts]
    assert sum(p.size for p in out) == 16 * 2**20
    return out


@pytest.mark.slow
@pytest.mark.oracle_c
@pytest.mark.parametrize("name", K_QUANTS)
def test_sixteen_million_random_values_encode_and_decode_like_c(ggml_c, sixteen_million, name):  # noqa: F811
    for x in sixteen_million:
        ours = assert_matches_c(ggml_c, x, name)
        if name in GGUF_DECODES:
            np.testing.assert_array_equal(
                _bits(bundler.decode(ours, name, x.shape)), _bits(_gguf_dequantize(ours, name))
            )


@pytest.mark.oracle_c
@pytest.mark.parametrize("case", sorted(kquant_cases.CASES))
@pytest.mark.parametrize("name", K_QUANTS)
def test_edge_case_encodes_and_decodes_like_c(ggml_c, name, case):  # noqa: F811
    assert_matches_c(ggml_c, kquant_cases.CASES[case](), name)


BIG = float(np.float32(3e38))
finite32 = st.floats(min_value=-BIG, max_value=BIG, allow_nan=False, allow_infinity=False, width=32)


@pytest.mark.oracle_c
@settings(max_examples=120, deadline=None)
@given(
    name=st.sampled_from(K_QUANTS),
    x=hnp.arrays(
        np.float32,
        st.tuples(st.integers(1, 3), st.sampled_from([256, 512])),
        elements=finite32 | st.sampled_from([0.0, -0.0, 1.0, -1.0, 0.5, 1e-40]),
    ),
)
def test_any_finite_float32_super_block_encodes_exactly_like_c(ggml_c, name, x):  # noqa: F811
    assert_matches_c(ggml_c, x, name)


@pytest.mark.parametrize("case", ["normal", "zero_sub_blocks", "tiny", "huge", "on_grid"])
@pytest.mark.parametrize("name", GGUF_DECODES)
def test_decode_matches_gguf_dequantize_bit_for_bit(name, case):
    x = kquant_cases.CASES[case]()
    raw = bundler.encode(x, name)
    with np.errstate(all="ignore"):
        ours = bundler.decode(raw, name, x.shape)
    expected = _gguf_dequantize(raw.reshape(-1, raw.shape[-1]), name).reshape(x.shape)
    np.testing.assert_array_equal(_bits(ours), _bits(expected))


def _golden_input() -> np.ndarray:
    return np.frombuffer((GOLDEN / "input.f32").read_bytes(), np.float32).reshape(-1, 256)


@pytest.mark.parametrize("name", K_QUANTS)
def test_golden_file_is_reproduced_bit_for_bit(name):
    golden = (GOLDEN / f"{name}.bin").read_bytes()
    assert bundler.encode(_golden_input(), name).tobytes() == golden


@pytest.mark.parametrize("name", K_QUANTS)
def test_golden_file_decodes_near_its_input(name):
    x = _golden_input()
    raw = np.frombuffer((GOLDEN / f"{name}.bin").read_bytes(), np.uint8).reshape(len(x), -1)
    with np.errstate(all="ignore"):
        y = bundler.decode(raw, name)
    row_max = np.abs(x).max(axis=1, keepdims=True)
    kept = ((row_max > 1e-4) & (row_max < 6e4))[:, 0]  # half scales neither tiny nor inf
    assert kept.sum() >= 5
    assert (np.abs(y - x)[kept] <= 0.6 * row_max[kept]).all()


def test_golden_input_is_its_seeded_recipe():
    spec = importlib.util.spec_from_file_location("maker", GOLDEN.parent / "make_kquant_golden.py")
    maker = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(maker)
    assert np.array_equal(maker.golden_input(), _golden_input())


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
@pytest.mark.parametrize("name", K_QUANTS)
def test_nonfinite_input_is_refused_with_its_position(name, bad):
    x = kquant_cases.normal(3, 512)
    x[2, 300] = bad
    with pytest.raises(NonFiniteError) as info:
        bundler.encode(x, name)
    assert info.value.index == (2, 300)


@pytest.mark.parametrize("name", ["q3_k", "q4_k"])
def test_one_and_two_threads_give_the_same_bytes(name):
    x = kquant_cases.normal(67, 512)
    before = numba.get_num_threads()
    try:
        numba.set_num_threads(1)
        one = bundler.encode(x, name)
        numba.set_num_threads(min(2, numba.config.NUMBA_NUM_THREADS))
        two = bundler.encode(x, name)
    finally:
        numba.set_num_threads(before)
    assert np.array_equal(one, two)


@pytest.mark.parametrize("rows", [1, 2, 3, 5, 17, 33])
@pytest.mark.parametrize("name", ["q2_k", "q4_k", "q6_k"])
def test_super_block_counts_that_do_not_fill_a_lane_group_encode_alike(name, rows):
    # super-blocks are searched several at a time; a partial group must not change a block
    x = kquant_cases.normal(rows, 256)
    whole = bundler.encode(x, name)
    for r in range(rows):
        assert np.array_equal(bundler.encode(x[r], name), whole[r])


def test_encoded_size_follows_the_facts_table():
    for name in K_QUANTS:
        codec = registry.get(name)
        assert bundler.encode(np.zeros((2, 512), np.float32), name).shape == (
            2,
            2 * codec.facts.type_size,
        )
