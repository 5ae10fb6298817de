"""IQ4_NL, IQ4_XS, the lattice codecs, TQ1_0, TQ2_0, MXFP4, NVFP4, Q1_0 and Q2_0 against the
C library, byte for byte.

Encoding equals `ggml_quantize_chunk(type, ..., imatrix)` (what llama-quantize calls) with
no importance, with random positive importance and with importance taken from the real
SmolLM2 tensors; decoding equals each type's `to_float` bit for bit, on encoded and on
arbitrary bytes. Files written by bundler with these codecs read back through the `gguf`
package with the same bytes (and values, where it decodes the type). Golden encodings
(golden/other, made by make_other_golden.py from the K-quant golden input) pin the bytes
forever.
"""

from __future__ import annotations

from pathlib import Path

import edge_cases
import gguf
import numpy as np
import pytest
from gguf import GGMLQuantizationType as T
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp
from test_c_oracle import ggml_c  # noqa: F401  (the C library fixture)

from bundler.bundle import Bundle, Tensor
from bundler.codecs import kernel_threads, registry
from bundler.containers import gguf as bundler_gguf
from bundler.errors import NonFiniteError, ShapeError, UsageError

pytestmark = pytest.mark.oracle_c

CODECS = [
    "iq4_nl", "iq4_xs", "iq3_xxs", "iq3_s", "iq2_xxs", "iq2_xs", "iq2_s", "iq1_s", "iq1_m",
    "tq1_0", "tq2_0", "mxfp4", "nvfp4", "q1_0", "q2_0",
]  # fmt: skip
#: The codecs whose reference quantizer uses an importance matrix.
WEIGHTED = ["iq4_nl", "iq4_xs", "iq3_xxs", "iq3_s", "iq2_xxs", "iq2_xs", "iq2_s", "iq1_s", "iq1_m"]
#: The codecs ggml quantizes only with an importance matrix, and the others.
REQUIRE = ["iq2_xxs", "iq2_xs", "iq1_s"]
PLAIN = [n for n in CODECS if n not in REQUIRE]
#: The codecs ggml quantizes by its reference function, whatever importance it is given.
IGNORE = ["tq1_0", "tq2_0", "mxfp4", "nvfp4", "q1_0", "q2_0"]
#: What the gguf package (0.19) knows of them: Q2_0 is not among its types, and it does not
#: decode Q1_0.
GGUF_TYPES = [n for n in CODECS if n.upper() in T.__members__]
GGUF_DECODES = [n for n in GGUF_TYPES if n != "q1_0"]


def _required(name: str, n: int) -> np.ndarray | None:
    """Importance weights for the codecs that need them (all ones), else None."""
    return np.ones(n, np.float32) if name in REQUIRE else None


COLS = 1024


def _rows(*rows) -> np.ndarray:
    return np.stack([np.resize(np.asarray(r, np.float32), COLS) for r in rows]).astype(np.float32)


def _near_powers_of_two() -> np.ndarray:
    """Blocks whose largest magnitude is a float32 within 8 steps of a power of two, for
    every exponent: where MXFP4's floorf(log2f(max)) and the IQ scale ratios turn over."""
    bits = np.arange(1, 255, dtype=np.int64) << 23
    amax = (bits[:, None] + np.arange(-8, 9)).reshape(-1).astype(np.uint32).view(np.float32)
    rng = np.random.default_rng(11)
    x = rng.uniform(-1, 1, (amax.size, 32)).astype(np.float32) * amax[:, None]
    x[:, 7] = amax
    x[1::2, 7] *= -1
    return x.reshape(-1)[: x.size // COLS * COLS].reshape(-1, COLS)


def _cases() -> dict[str, np.ndarray]:
    rng = np.random.default_rng(15)
    outliers = rng.standard_normal((8, COLS)).astype(np.float32) * 0.02
    outliers[:, ::97] = 40.0
    sub_block_zeros = rng.standard_normal((4, COLS)).astype(np.float32)
    sub_block_zeros[:, 32:64] = 0.0  # one 32-value sub-block of each super-block is zero
    sub_block_zeros[:, 288:320] = 1e-16  # below ggml's 1e-15 group threshold
    cases = {
        "normal": edge_cases.normal_weights(32, COLS),
        "uniform": rng.uniform(-3, 3, (8, COLS)),
        "heavy_tails": rng.standard_t(2, (8, COLS)),
        "bf16_rounded": edge_cases.bf16_rounded(8, COLS),
        "mixed_signs": np.abs(rng.standard_normal((8, COLS))) * np.resize([1, -1, -1, 1], COLS),
        "all_positive": np.abs(rng.standard_normal((4, COLS))),
        "all_negative": -np.abs(rng.standard_normal((4, COLS))),
        "zeros_and_constants": _rows(0.0, -0.0, 0.5, -3.25, 1e-16, 65504.0),
        "outliers": outliers,
        "sub_block_zeros": sub_block_zeros,
        "tiny": rng.standard_normal((4, COLS)) * np.array([[1e-38], [1e-41], [1e-44], [1e-30]]),
        "huge": rng.standard_normal((4, COLS)) * np.array([[1e5], [1e19], [1e30], [3e37]]),
        "float32_extremes": _rows(
            [3.4028235e38, -3.4028235e38, 1.0], [1.4e-45, -1.4e-45, 0.0], [1e-45, 1e38]
        ),
        "row_scales": rng.standard_normal((16, COLS)) * np.logspace(-40, 38, 16)[:, None],
        "tied_magnitudes": edge_cases.tied_magnitudes(COLS),
        "signed_zero_extremes": edge_cases.signed_zero_extremes(COLS),
        "ternary_ties": _rows(np.resize([1.0, 0.5, -0.5, 0.49999997, -0.50000006, 0.0], 256)),
        "near_powers_of_two": _near_powers_of_two(),
    }
    return {k: np.ascontiguousarray(v, dtype=np.float32) for k, v in cases.items()}


CASES = _cases()


def _bits(a: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(a, dtype=np.float32).view(np.uint32)


def _assert_same_bytes(ours: np.ndarray, theirs: np.ndarray, what: str) -> None:
    differ = np.flatnonzero(ours.reshape(-1) != theirs.reshape(-1))
    assert differ.size == 0, f"{what}: {differ.size} bytes differ, first at {differ[:5]}"


@pytest.mark.parametrize("case", sorted(CASES))
@pytest.mark.parametrize("name", CODECS)
def test_encode_equals_the_c_library_without_importance(ggml_c, name, case):  # noqa: F811
    x = edge_cases.c_safe(name, CASES[case])
    codec = registry.get(name)
    if name in REQUIRE:  # refused by both: ggml would abort
        with pytest.raises(UsageError, match=f"{name} needs importance weights"):
            codec.encode(x)
        with pytest.raises(ValueError, match="without an imatrix"):
            ggml_c.quantize(name, x)
        return
    theirs = ggml_c.quantize(name, x)
    _assert_same_bytes(codec.encode(x), theirs, f"{name} {case}")
    np.testing.assert_array_equal(
        _bits(codec.decode(theirs, x.shape)), _bits(ggml_c.dequantize(name, theirs, x.shape))
    )


def _random_weights(n: int, seed: int) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {
        "uniform": rng.uniform(0.01, 10.0, n),
        "lognormal": rng.lognormal(0.0, 3.0, n),
        "sparse": np.where(rng.random(n) < 0.1, rng.uniform(0, 100, n), 0.0),
        "tiny": rng.uniform(1e-30, 1e-20, n),
    }


@pytest.mark.parametrize("case", sorted(CASES))
@pytest.mark.parametrize("name", WEIGHTED)
def test_weighted_encode_equals_the_c_library_with_random_positive_importance(
    ggml_c,  # noqa: F811
    name,
    case,
):
    x = edge_cases.c_safe(name, CASES[case])
    codec = registry.get(name)
    for label, w in _random_weights(COLS, len(case)).items():
        w = w.astype(np.float32)
        theirs = ggml_c.quantize(name, x, imatrix=w)
        _assert_same_bytes(codec.encode(x, importance=w), theirs, f"{name} {case} {label}")


@pytest.fixture(scope="module")
def smollm2(smollm2_gguf):
    """Decoded SmolLM2 tensors: the weight matrices of block 0 and the norm weights."""
    bundle = bundler_gguf.read(smollm2_gguf)
    names = [
        "blk.0.attn_q.weight",
        "blk.0.attn_norm.weight",
        "blk.0.ffn_up.weight",
        "blk.0.ffn_down.weight",
        "blk.0.ffn_norm.weight",
    ]
    return {n.split(".")[2]: bundle.tensors[n].numpy().astype(np.float32) for n in names}


def _real_pairs(t: dict[str, np.ndarray]) -> list[tuple[str, np.ndarray, np.ndarray]]:
    """(label, rows, importance) from real tensors: importance like an imatrix row, the mean
    square of what feeds each column (the norm weights for rows of 576 values, the up
    projection's outputs for the down projection's rows of 1536)."""
    up_energy = np.mean(t["ffn_up"].astype(np.float64) ** 2, axis=1)
    return [
        ("attn_q/attn_norm^2", t["attn_q"], t["attn_norm"] ** 2),
        ("ffn_up/ffn_norm^2", t["ffn_up"], t["ffn_norm"] ** 2),
        ("ffn_down/ffn_up energy", t["ffn_down"], up_energy),
    ]


@pytest.mark.parametrize("name", CODECS)
def test_encode_equals_the_c_library_on_real_smollm2_tensors_with_their_importance(
    ggml_c,  # noqa: F811
    smollm2,
    name,
):
    codec = registry.get(name)
    for label, x, w in _real_pairs(smollm2):
        if x.shape[-1] % codec.facts.block_size:
            continue  # rows of 576 are not whole 256-value super-blocks
        x = np.ascontiguousarray(x, dtype=np.float32)
        w = np.ascontiguousarray(w, dtype=np.float32)
        if name not in REQUIRE:
            _assert_same_bytes(codec.encode(x), ggml_c.quantize(name, x), f"{name} {label}")
        theirs = ggml_c.quantize(name, x, imatrix=w)
        _assert_same_bytes(codec.encode(x, importance=w), theirs, f"{name} {label} weighted")


@st.composite
def _any_rows(draw):
    name = draw(st.sampled_from(CODECS))
    block = registry.get(name).facts.block_size
    shape = (draw(st.integers(1, 3)), block * draw(st.integers(1, 2)))
    # any finite float32, subnormals and the largest magnitudes included (for the lattice
    # codecs, those below where ggml's search aborts)
    bound = edge_cases.LATTICE_SAFE if name in edge_cases.LATTICE else None
    finite = st.floats(
        -bound if bound else None, bound, width=32, allow_nan=False, allow_infinity=False
    )
    x = draw(hnp.arrays(np.float32, shape, elements=finite))
    return name, x, _required(name, shape[-1])


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(case=_any_rows())
def test_any_finite_rows_encode_and_decode_like_c(ggml_c, case):  # noqa: F811
    name, x, w = case
    codec = registry.get(name)
    theirs = ggml_c.quantize(name, x, imatrix=w)
    _assert_same_bytes(codec.encode(x, importance=w), theirs, f"{name} hypothesis")
    np.testing.assert_array_equal(
        _bits(codec.decode(theirs, x.shape)), _bits(ggml_c.dequantize(name, theirs, x.shape))
    )


@pytest.mark.parametrize("name", [n for n in WEIGHTED if n not in REQUIRE])
def test_importance_changes_the_codes_of_weighted_codecs(name):
    x = CASES["normal"]
    w = _random_weights(COLS, 3)["lognormal"].astype(np.float32)
    codec = registry.get(name)
    assert not np.array_equal(codec.encode(x), codec.encode(x, importance=w))
    # uniform weights are not the same as none: none means x^2, uniform means sqrt(sigma2 + x^2)
    assert not np.array_equal(codec.encode(x), codec.encode(x, importance=np.ones(COLS)))


@pytest.mark.parametrize("name", IGNORE)
def test_codecs_without_a_weighted_quantizer_ignore_importance_as_ggml_does(ggml_c, name):  # noqa: F811
    x = CASES["normal"]
    w = _random_weights(COLS, 4)["uniform"].astype(np.float32)
    codec = registry.get(name)
    assert codec.facts.ignores_importance and not codec.facts.takes_importance
    assert np.array_equal(codec.encode(x, importance=w), ggml_c.quantize(name, x, imatrix=w))


@pytest.mark.parametrize("name", WEIGHTED)
def test_importance_of_the_wrong_length_is_refused(name):
    with pytest.raises(ShapeError, match="importance weights have 1023 values"):
        registry.get(name).encode(CASES["normal"], importance=np.ones(COLS - 1, np.float32))


@pytest.mark.parametrize("name", CODECS)
def test_decode_of_arbitrary_bytes_equals_the_c_to_float(ggml_c, name):  # noqa: F811
    # every code, every scale byte, half NaNs and infinities, TQ1_0 bytes past 242
    codec = registry.get(name)
    shape = (16, COLS)
    raw = np.random.default_rng(8).integers(0, 256, codec.facts.nbytes(shape), dtype=np.uint8)
    ours = codec.decode(raw, shape)
    np.testing.assert_array_equal(_bits(ours), _bits(ggml_c.dequantize(name, raw, shape)))


@pytest.mark.parametrize("name", CODECS)
def test_non_finite_values_are_refused_naming_their_position(name):
    x = CASES["normal"].copy()
    x[3, 700] = np.inf
    with pytest.raises(NonFiniteError, match=r"index \(3, 700\)"):
        registry.get(name).encode(x, importance=_required(name, COLS))


@pytest.mark.parametrize("name", CODECS)
def test_two_threads_give_the_bytes_of_one(name):
    x = edge_cases.normal_weights(257, 512)
    codec = registry.get(name)
    w = _random_weights(512, 5)["uniform"] if codec.facts.takes_importance else None
    with kernel_threads(1):
        one = codec.encode(x, importance=w)
    with kernel_threads(2):
        two = codec.encode(x, importance=w)
        assert np.array_equal(codec.decode(one, x.shape), codec.decode(two, x.shape))
    assert np.array_equal(one, two)


def test_encodes_strided_input_like_its_contiguous_copy():
    x = np.asfortranarray(CASES["uniform"])
    for name in CODECS:
        codec = registry.get(name)
        w = _required(name, COLS)
        ours = codec.encode(x, importance=w)
        assert np.array_equal(ours, codec.encode(np.ascontiguousarray(x), importance=w)), name


def test_bundler_gguf_files_read_back_through_the_gguf_package(tmp_path):
    x = CASES["normal"][:8]
    w = _random_weights(COLS, 6)["uniform"].astype(np.float32)
    plain = [n for n in PLAIN if n in GGUF_TYPES]
    tensors = [Tensor.from_raw(n, x.shape, n, registry.get(n).encode(x)) for n in plain]
    tensors += [
        Tensor.from_raw(f"{n}.weighted", x.shape, n, registry.get(n).encode(x, importance=w))
        for n in WEIGHTED
    ]
    path = tmp_path / "new-types.gguf"
    Bundle({"general.architecture": "llama"}, tensors).save(path)
    reader = gguf.GGUFReader(path)
    assert [t.name for t in reader.tensors] == [t.name for t in tensors]
    for ours, theirs in zip(tensors, reader.tensors, strict=True):
        assert theirs.tensor_type == T[ours.codec.name.upper()]
        assert [int(d) for d in theirs.shape] == list(reversed(x.shape))
        raw = np.asarray(theirs.data).view(np.uint8).reshape(-1)
        assert np.array_equal(raw, ours.raw())
        if ours.codec.name not in GGUF_DECODES:
            continue
        values = gguf.quants.dequantize(raw.reshape(len(x), -1), theirs.tensor_type)
        np.testing.assert_array_equal(_bits(values), _bits(ours.numpy()))
    again = bundler_gguf.read(path)
    for t in tensors:
        assert again.tensors[t.name].codec == t.codec
        assert np.array_equal(again.tensors[t.name].raw(), t.raw())


GOLDEN = Path(__file__).parent / "golden" / "other"


@pytest.mark.parametrize("name", PLAIN)
def test_golden_file_is_reproduced_bit_for_bit(name):
    x = np.fromfile(GOLDEN / "input.f32", np.float32).reshape(-1, 256)
    assert registry.get(name).encode(x).tobytes() == (GOLDEN / f"{name}.bin").read_bytes()


def test_golden_input_is_the_k_quant_golden_input():
    assert (GOLDEN / "input.f32").read_bytes() == (
        GOLDEN.parent / "kquants" / "input.f32"
    ).read_bytes()
