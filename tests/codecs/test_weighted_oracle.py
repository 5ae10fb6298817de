"""The weighted quantizers (importance weights, llama-quantize's --imatrix) against the C
library: `Codec.encode(x, importance=w)` equals `ggml_quantize_chunk(type, ..., imatrix=w)`
byte for byte for every codec that takes weights, on random data, the K-quant corner cases
and real SmolLM2 rows with weights computed from the model's own tensors; Q8_0 and the
float types ignore the weights as ggml does; wrong weights are typed errors.
"""

from __future__ import annotations

import edge_cases
import kquant_cases
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp
from test_c_oracle import ggml_c  # noqa: F401  (the C library fixture)

import bundler
from bundler.codecs import registry
from bundler.codecs.kernels import kernel_threads
from bundler.errors import ShapeError, UsageError

pytestmark = pytest.mark.oracle_c

WEIGHTED = [c.name for c in registry.all_codecs() if c.facts.takes_importance]
LEGACY = ["q4_0", "q4_1", "q5_0", "q5_1"]


def _weights(n: int) -> dict[str, np.ndarray]:
    """Importance rows of length n: random positive ones, ones spread over many orders of
    magnitude as real matrices are, with zeros (single columns and whole sub-blocks), all
    equal, and all zero."""
    rng = np.random.default_rng(n)
    with_zeros = rng.uniform(0.01, 5.0, n)
    with_zeros[:: max(1, n // 37)] = 0.0
    with_zeros[16:48] = 0.0
    rows = {
        "uniform": rng.uniform(0.01, 5.0, n),
        "lognormal": np.exp(rng.normal(0.0, 3.0, n)),
        "with_zeros": with_zeros,
        "all_equal": np.full(n, 0.7),
        "all_zero": np.zeros(n),
    }
    return {k: v.astype(np.float32) for k, v in rows.items()}


def assert_weighted_matches_c(ggml_c, name: str, x: np.ndarray, w: np.ndarray, label: str):  # noqa: F811
    x = edge_cases.c_safe(name, x)
    ours = bundler.encode(x, name, importance=w)
    theirs = ggml_c.quantize(name, x, imatrix=w)
    differ = np.flatnonzero(ours.reshape(-1) != theirs.reshape(-1))
    assert differ.size == 0, f"{name} {label}: {differ.size} bytes differ, first at {differ[:5]}"
    return ours


@pytest.mark.parametrize("case", sorted(kquant_cases.CASES))
@pytest.mark.parametrize("name", WEIGHTED)
def test_weighted_encode_equals_ggml_quantize_chunk_with_imatrix(ggml_c, name, case):  # noqa: F811
    x = kquant_cases.CASES[case]()
    for kind, w in _weights(x.shape[-1]).items():
        assert_weighted_matches_c(ggml_c, name, x, w, f"{case} with {kind} weights")


@pytest.mark.parametrize("name", LEGACY)
def test_legacy_weights_follow_columns_of_rows_that_are_not_whole_super_blocks(ggml_c, name):  # noqa: F811
    # rows of 3 blocks: each block's weights start at its column, sigma^2 is per row
    rng = np.random.default_rng(5)
    x = (rng.standard_normal((41, 96)) * np.logspace(-3, 1, 41)[:, None]).astype(np.float32)
    x[7] = -np.abs(x[7])  # negative-dominant rows
    x[8, 40] = 25.0  # a single outlier
    for kind, w in _weights(96).items():
        assert_weighted_matches_c(ggml_c, name, x, w, kind)


@pytest.mark.parametrize("name", WEIGHTED)
def test_weighted_bytes_do_not_depend_on_the_thread_split(ggml_c, name):  # noqa: F811
    # 3 rows of 1280 values: two threads split the blocks inside a row
    x = kquant_cases.normal(3, 1280)
    w = _weights(1280)["lognormal"]
    one_thread = None
    for threads in (1, 2):
        with kernel_threads(threads):
            ours = assert_weighted_matches_c(ggml_c, name, x, w, f"{threads} threads")
        one_thread = ours if one_thread is None else one_thread
        assert np.array_equal(ours, one_thread)


@pytest.mark.parametrize(
    "name", [n for n in WEIGHTED if not registry.get(n).facts.requires_importance]
)
def test_weighted_encoding_differs_from_the_reference_one(name):
    # the weights are not silently dropped: ggml's weighted search picks other codes
    x = kquant_cases.normal(8, 1024)
    w = _weights(1024)["lognormal"]
    assert not np.array_equal(bundler.encode(x, name, importance=w), bundler.encode(x, name))


@pytest.mark.parametrize("name", ["q8_0", "f32", "f16", "bf16"])
def test_codecs_whose_ggml_quantizer_ignores_weights_accept_and_ignore_them(ggml_c, name):  # noqa: F811
    x = kquant_cases.normal(4, 512)
    w = _weights(512)["lognormal"]
    ours = bundler.encode(x, name, importance=w)
    assert np.array_equal(ours, bundler.encode(x, name))
    assert np.array_equal(ours.reshape(4, -1), ggml_c.quantize(name, x, imatrix=w))


@pytest.mark.parametrize("name", ["q8_1", "q8_k", "apr_q4", "apr_q8"])
def test_codecs_without_a_weighted_quantizer_refuse_weights(name):
    with pytest.raises(UsageError, match=rf"{name} does not take importance weights.*q4_0"):
        bundler.encode(np.zeros((2, 256), np.float32), name, importance=np.ones(256))


@pytest.mark.parametrize(
    ("weights", "error", "message"),
    [
        (np.ones(255), ShapeError, "255 values but the rows of shape .* have 256 columns"),
        (np.ones((2, 256)), ShapeError, "must be 1-D"),
        (np.r_[np.ones(9), -1.0, np.ones(246)], UsageError, "column 9 is -1.0"),
        (np.r_[np.ones(3), np.nan, np.ones(252)], UsageError, "column 3 is nan"),
        (np.r_[np.inf, np.ones(254), -2.0], UsageError, r"column 0 is inf \(2 such columns\)"),
        (np.array(["a"] * 256), UsageError, "must be numbers"),
    ],
    ids=["length", "two_axes", "negative", "nan", "inf", "strings"],
)
@pytest.mark.parametrize("name", ["q4_0", "q6_k", "q8_0"])
def test_wrong_weights_are_typed_errors_naming_the_problem(name, weights, error, message):
    with pytest.raises(error, match=message):
        bundler.encode(np.zeros((2, 256), np.float32), name, importance=weights)


def test_the_facts_table_declares_which_codecs_take_weights():
    assert WEIGHTED == [
        "q4_0", "q4_1", "q5_0", "q5_1", "q2_k", "q3_k", "q4_k", "q5_k", "q6_k",
        "iq2_xxs", "iq2_xs", "iq3_xxs", "iq1_s", "iq4_nl", "iq3_s", "iq2_s", "iq4_xs", "iq1_m",
    ]  # fmt: skip
    facts = {c.name: c.facts for c in registry.all_codecs()}
    assert facts["q8_0"].ignores_importance and not facts["q8_0"].takes_importance
    ignoring = ("tq2_0", "mxfp4", "nvfp4", "q1_0", "q2_0")  # ggml's reference quantizers
    assert all(facts[n].ignores_importance and not facts[n].takes_importance for n in ignoring)
    assert not facts["q8_1"].accepts_importance
    # ggml_quantize_requires_imatrix: IQ2_XXS, IQ2_XS, IQ1_S (IQ2_S takes them optionally)
    assert [n for n in WEIGHTED if facts[n].requires_importance] == ["iq2_xxs", "iq2_xs", "iq1_s"]


# ---------------------------------------------------------------- real rows


def _rms_normed(x: np.ndarray, gain: np.ndarray) -> np.ndarray:
    return x / np.sqrt(np.mean(x * x, axis=1, keepdims=True) + 1e-5) * gain


@pytest.fixture(scope="module")
def smollm2_rows(smollm2_gguf) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Real SmolLM2 weight matrices (decoded from the Q4_1 file) with importance rows
    computed as llama-imatrix does (the mean square of each input column) from layer-0
    inputs built from the model's own tensors: 2048 token embeddings, RMS-normed with the
    layer's norm weights, and the FFN activations they give."""
    bundle = bundler.open(smollm2_gguf)
    t = bundle.tensors
    embd = t["token_embd.weight"]
    rows = np.random.default_rng(0).choice(embd.shape[0], 2048, replace=False)
    raw = embd.raw().reshape(embd.shape[0], -1)
    tokens = embd.codec.decode(raw[np.sort(rows)], (2048, embd.shape[1]))
    attn_in = _rms_normed(tokens, t["blk.0.attn_norm.weight"].numpy())
    ffn_in = _rms_normed(tokens, t["blk.0.ffn_norm.weight"].numpy())
    gate = ffn_in @ t["blk.0.ffn_gate.weight"].numpy().T
    down_in = gate / (1 + np.exp(-gate)) * (ffn_in @ t["blk.0.ffn_up.weight"].numpy().T)
    v = attn_in @ t["blk.0.attn_v.weight"].numpy().T  # 3 key-value heads of 64, 9 query heads
    out_in = np.repeat(v.reshape(-1, 3, 1, 64), 3, axis=2).reshape(-1, 576)

    def imatrix(acts: np.ndarray) -> np.ndarray:
        return np.mean(acts.astype(np.float64) ** 2, axis=0).astype(np.float32)

    inputs = {"attn_q": attn_in, "attn_k": attn_in, "attn_v": attn_in, "attn_output": out_in}
    inputs |= {"ffn_gate": ffn_in, "ffn_up": ffn_in, "ffn_down": down_in}
    return {
        name: (t[f"blk.0.{name}.weight"].numpy(), imatrix(acts)) for name, acts in inputs.items()
    }


@pytest.mark.realfile
@pytest.mark.parametrize("name", WEIGHTED)
def test_real_smollm2_rows_with_their_importance_encode_like_c(ggml_c, smollm2_rows, name):  # noqa: F811
    block = registry.get(name).facts.block_size
    for tensor, (x, w) in smollm2_rows.items():
        assert w.min() >= 0 and w.max() > 10 * np.median(w)  # a real, uneven importance row
        # rows of 576 are not whole super-blocks: join them into rows of 2304, each column
        # keeping its weight
        join = np.lcm(x.shape[-1], block) // x.shape[-1]
        x, w = x.reshape(-1, join * x.shape[-1]), np.tile(w, join)
        assert_weighted_matches_c(ggml_c, name, x, w, f"blk.0.{tensor}.weight")


# ---------------------------------------------------------------- property


@st.composite
def _rows_and_weights(draw):
    name = draw(st.sampled_from(WEIGHTED))
    block = registry.get(name).facts.block_size
    cols = block * draw(st.integers(1, 3))
    rows = draw(st.integers(1, 3))
    finite = st.floats(-1e4, 1e4, width=32, allow_subnormal=True)
    x = draw(hnp.arrays(np.float32, (rows, cols), elements=finite))
    w = draw(hnp.arrays(np.float32, cols, elements=st.floats(0, 1e6, width=32)))
    return name, x, w


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(case=_rows_and_weights())
def test_any_finite_rows_and_weights_encode_like_c(ggml_c, case):  # noqa: F811
    name, x, w = case
    assert_weighted_matches_c(ggml_c, name, x, w, "hypothesis")


@pytest.mark.parametrize("name", WEIGHTED)
def test_weighted_encode_refuses_nonfinite_input_with_its_position(name):
    x = kquant_cases.normal(3, 512)
    x[2, 300] = np.nan
    with pytest.raises(bundler.NonFiniteError, match=r"index \(2, 300\)"):
        bundler.encode(x, name, importance=np.ones(512))
