"""The mixed-precision presets: llama-quantize's per-tensor choices on a synthetic llama model.

The expected choices are written out by hand from llama.cpp's rules (src/llama-quant.cpp of
the llama.cpp that llama-cpp-python 0.3.36 vendors), for a 32-layer llama with grouped-query
attention (32 query heads, 8 key/value heads) whose rows are all multiples of 256.
"""

from __future__ import annotations

import re

import pytest

from bundler.bundle import Bundle, BytesSource, Tensor
from bundler.plan import PlanOptions, make_plan
from bundler.plan.mixtures import loader_order, use_more_bits

N_LAYER = 32
N_EMBD, N_FF, N_KV, N_VOCAB = 4096, 11008, 1024, 32000

#: use_more_bits for 32 layers: the first and last eighth, and every third layer between.
MORE_BITS_32 = {0, 1, 2, 3, 6, 9, 12, 15, 18, 21, 24, 27, 28, 29, 30, 31}
#: ... and for 30 layers (SmolLM2-135M).
MORE_BITS_30 = {0, 1, 2, 5, 8, 11, 14, 17, 20, 23, 26, 27, 28, 29}


def _tensor(name: str, shape: tuple[int, ...], codec: str = "f16") -> Tensor:
    # plans read shapes and codecs only, never the bytes
    return Tensor(name, shape, codec, BytesSource(b""))


def _layer(i: int) -> list[Tensor]:
    b = f"blk.{i}"
    return [
        _tensor(f"{b}.attn_norm.weight", (N_EMBD,), "f32"),
        _tensor(f"{b}.attn_q.weight", (N_EMBD, N_EMBD)),
        _tensor(f"{b}.attn_k.weight", (N_KV, N_EMBD)),
        _tensor(f"{b}.attn_v.weight", (N_KV, N_EMBD)),
        _tensor(f"{b}.attn_output.weight", (N_EMBD, N_EMBD)),
        _tensor(f"{b}.ffn_gate.weight", (N_FF, N_EMBD)),
        _tensor(f"{b}.ffn_up.weight", (N_FF, N_EMBD)),
        _tensor(f"{b}.ffn_down.weight", (N_EMBD, N_FF)),
        _tensor(f"{b}.ffn_norm.weight", (N_EMBD,), "f32"),
    ]


def llama_bundle(layer_order: list[int] | None = None, tied: bool = False) -> Bundle:
    """A llama-like bundle; `layer_order` gives the order its blocks are stored in."""
    metadata = {
        "general.architecture": "llama",
        "llama.block_count": N_LAYER,
        "llama.embedding_length": N_EMBD,
        "llama.feed_forward_length": N_FF,
        "llama.attention.head_count": 32,
        "llama.attention.head_count_kv": 8,
    }
    tensors = [_tensor("token_embd.weight", (N_VOCAB, N_EMBD))]
    for i in layer_order if layer_order is not None else range(N_LAYER):
        tensors += _layer(i)
    tensors.append(_tensor("output_norm.weight", (N_EMBD,), "f32"))
    if not tied:
        tensors.append(_tensor("output.weight", (N_VOCAB, N_EMBD)))
    return Bundle(metadata, tensors)


def _expected(ftype: str, name: str) -> str:
    """llama-quantize's choice for `name` in the synthetic model, spelled out per file type."""
    base = {"Q2_K": "q2_k", "Q3_K_M": "q3_k", "Q4_K_S": "q4_k", "Q4_K_M": "q4_k"}
    base |= {"Q5_K_M": "q5_k", "Q6_K": "q6_k", "IQ4_NL": "iq4_nl", "IQ4_XS": "iq4_xs"}
    base |= {"TQ1_0": "tq1_0", "TQ2_0": "tq2_0"}
    if name.endswith("_norm.weight"):
        return "f32"
    if ftype == "MXFP4_MOE":  # no stacked experts here: everything else Q8_0
        return "q8_0"
    if name == "output.weight":
        return "q6_k"
    if name == "token_embd.weight" and ftype in ("TQ1_0", "TQ2_0"):
        return "q4_k"
    layer = int(name.split(".")[1]) if name.startswith("blk.") else -1
    more = layer in MORE_BITS_32
    if name.endswith("attn_v.weight"):
        return {
            "IQ4_NL": "q5_k",  # n_head / n_head_kv >= 4
            "IQ4_XS": "q5_k",
            "Q2_K": "q4_k",  # n_head / n_head_kv >= 4
            "Q3_K_M": "q5_k" if layer < 2 else "q4_k",
            "Q4_K_S": "q5_k" if layer < 4 else "q4_k",
            "Q4_K_M": "q6_k" if more else "q4_k",
            "Q5_K_M": "q6_k" if more else "q5_k",
        }.get(ftype, base[ftype])
    if name.endswith("ffn_down.weight"):
        return {
            "Q2_K": "q3_k",
            "Q3_K_M": "q5_k" if layer < 2 else "q4_k",
            "Q4_K_S": "q5_k" if layer < 4 else "q4_k",
            "Q4_K_M": "q6_k" if more else "q4_k",
            "Q5_K_M": "q6_k" if more else "q5_k",
            # the first eighth, without an importance matrix
            "IQ4_NL": "q5_k" if layer < 4 else "iq4_nl",
            "IQ4_XS": "q5_k" if layer < 4 else "iq4_xs",
        }.get(ftype, base[ftype])
    if name.endswith("attn_output.weight"):
        return {"Q2_K": "q3_k", "Q3_K_M": "q4_k"}.get(ftype, base[ftype])
    return base[ftype]


FTYPES = ("Q4_K_M", "Q4_K_S", "Q5_K_M", "Q3_K_M", "Q2_K", "Q6_K")
FTYPES += ("IQ4_NL", "IQ4_XS", "TQ1_0", "TQ2_0", "MXFP4_MOE")
#: Blocks stored as a name sort leaves them (blk.0, blk.1, blk.10, ...), as in real files.
NAME_SORTED = sorted(range(N_LAYER), key=str)


@pytest.mark.parametrize("layer_order", [None, NAME_SORTED], ids=["numeric", "name-sorted"])
@pytest.mark.parametrize("ftype", FTYPES)
def test_mixture_gives_each_tensor_llama_quantize_codec(ftype, layer_order):
    plan = make_plan(llama_bundle(layer_order), PlanOptions(type=ftype))
    got = {c.name: c.target.name for c in plan.choices}
    want = {name: _expected(ftype, name) for name in got}
    assert {n: c for n, c in got.items() if c != want[n]} == {}


@pytest.mark.parametrize("ftype", FTYPES)
def test_plan_lists_choices_in_bundle_order(ftype):
    bundle = llama_bundle(NAME_SORTED)
    plan = make_plan(bundle, PlanOptions(type=ftype))
    assert [c.name for c in plan.choices] == list(bundle.tensors)
    assert [c.index for c in plan.choices] == list(range(len(bundle.tensors)))


@pytest.mark.parametrize(
    ("ftype", "cols", "want"),
    [("Q4_K_M", N_EMBD, "q6_k"), ("Q2_K", N_EMBD, "q6_k"), ("Q4_K_M", 576, "q8_0")],
)
def test_tied_token_embedding_gets_the_output_codec(ftype, cols, want):
    bundle = llama_bundle([0], tied=True)
    bundle.tensors["token_embd.weight"] = _tensor("token_embd.weight", (N_VOCAB, cols))
    plan = make_plan(bundle, PlanOptions(type=ftype))
    assert {c.name: c.target.name for c in plan.choices}["token_embd.weight"] == want


@pytest.mark.parametrize(
    ("n_layers", "want"), [(32, MORE_BITS_32), (30, MORE_BITS_30), (8, {0, 3, 6, 7})]
)
def test_use_more_bits_widens_first_and_last_eighth_and_every_third(n_layers, want):
    assert {i for i in range(n_layers) if use_more_bits(i, n_layers)} == want


@pytest.mark.parametrize(
    ("ftype", "cols", "want"),
    [
        ("Q2_K", 576, "q4_0"),
        ("Q3_K_S", 576, "q4_0"),
        ("Q4_K_S", 576, "q5_0"),
        ("Q5_K_S", 576, "q5_1"),
        ("Q6_K", 576, "q8_0"),
        ("Q4_K_S", 48, "f16"),  # not even a multiple of 32
        ("Q4_0", 48, "f16"),
        ("Q4_K_S", 512, "q4_k"),
        ("IQ4_XS", 576, "iq4_nl"),
        ("IQ4_XS", 48, "f16"),
        ("IQ4_NL", 576, "iq4_nl"),
        ("TQ1_0", 576, "q4_0"),
        ("TQ2_0", 576, "q4_0"),
        ("TQ2_0", 512, "tq2_0"),
        ("MXFP4_MOE", 576, "mxfp4"),
        ("MXFP4_MOE", 48, "f16"),
    ],
)
def test_rows_that_do_not_fit_fall_back_as_llama_quantize_does(ftype, cols, want):
    bundle = Bundle(
        {"general.architecture": "llama", "llama.block_count": 1},
        [_tensor("blk.0.attn_q.weight", (64, cols))],
    )
    (choice,) = make_plan(bundle, PlanOptions(type=ftype, pure=True)).choices
    assert choice.target.name == want


@pytest.mark.parametrize(
    ("names", "want"),
    [
        (
            ["blk.10.a.weight", "output.weight", "blk.2.b.weight", "blk.2.a.weight", "a"],
            ["a", "output.weight", "blk.2.a.weight", "blk.2.b.weight", "blk.10.a.weight"],
        ),
        (
            ["blk.x.weight", "blk.1.w", "token_embd.weight"],
            ["blk.x.weight", "token_embd.weight", "blk.1.w"],
        ),
    ],
)
def test_loader_order_puts_blocks_by_number_after_the_rest(names, want):
    assert sorted(names, key=loader_order) == want


@pytest.mark.parametrize(
    ("options", "want"),
    [
        (PlanOptions(type="Q4_K_M", output_tensor_type="f16"), "f16"),
        # the output codec reaches a tied embedding through the mixture only
        (PlanOptions(type="Q4_K_M", output_tensor_type="f16", pure=True), "q4_k"),
        (PlanOptions(type="F16", output_tensor_type="q4_0"), "f16"),
        (
            PlanOptions(type="Q4_K_M", output_tensor_type="f16", tensor_types=[("embd", "q4_0")]),
            "q4_0",
        ),
        (PlanOptions(type="Q4_K_M", output_tensor_type="f16", token_embedding_type="q8_0"), "q8_0"),
    ],
)
def test_output_tensor_type_reaches_a_tied_embedding_as_in_llama_quantize(options, want):
    plan = make_plan(llama_bundle([0], tied=True), options)
    assert {c.name: c.target.name for c in plan.choices}["token_embd.weight"] == want


@pytest.mark.parametrize("pure", [False, True])
def test_output_tensor_type_sets_an_untied_output_whatever_the_mixture(pure):
    options = PlanOptions(type="Q4_K_M", output_tensor_type="q8_0", pure=pure)
    got = {c.name: c.target.name for c in make_plan(llama_bundle([0]), options).choices}
    assert (got["output.weight"], got["token_embd.weight"]) == ("q8_0", "q4_k")


def moe_bundle(arch: str = "llama", n_expert: int = 8) -> Bundle:
    """An eight-layer mixture-of-experts model: stacked expert tensors (n_expert, rows, cols)."""
    metadata = {
        "general.architecture": arch,
        f"{arch}.block_count": 8,
        f"{arch}.attention.head_count": 32,
        f"{arch}.attention.head_count_kv": 32,
        f"{arch}.expert_count": n_expert,
    }
    tensors = [_tensor("token_embd.weight", (N_VOCAB, N_EMBD))]
    for i in range(8):
        b = f"blk.{i}"
        tensors += [
            _tensor(f"{b}.attn_q.weight", (N_EMBD, N_EMBD)),
            _tensor(f"{b}.attn_k.weight", (N_EMBD, N_EMBD)),
            _tensor(f"{b}.attn_v.weight", (N_EMBD, N_EMBD)),
            _tensor(f"{b}.attn_output.weight", (N_EMBD, N_EMBD)),
            _tensor(f"{b}.ffn_gate_inp.weight", (n_expert, N_EMBD), "f32"),
            _tensor(f"{b}.ffn_gate_exps.weight", (n_expert, 1024, N_EMBD)),
            _tensor(f"{b}.ffn_up_exps.weight", (n_expert, 1024, N_EMBD)),
            _tensor(f"{b}.ffn_down_exps.weight", (n_expert, N_EMBD, 1024)),
        ]
    tensors.append(_tensor("output.weight", (N_VOCAB, N_EMBD)))
    return Bundle(metadata, tensors)


@pytest.mark.parametrize(
    ("ftype", "want"),
    [
        # stacked experts MXFP4, every other weight (output and embeddings included) Q8_0
        ("MXFP4_MOE", {"exps": "mxfp4", "attn": "q8_0", "token_embd": "q8_0", "^output": "q8_0"}),
        # eight experts: attn_v and attn_k Q8_0, attn_output Q5_K, ffn_down of the first
        # eighth of the layers (layer 0) Q5_K
        ("IQ4_XS", {"attn_v": "q8_0", "attn_k": "q8_0", "attn_output": "q5_k", "attn_q": "iq4_xs",
                    "blk.0.ffn_down": "q5_k", "blk.1.ffn_down": "iq4_xs", "ffn_up": "iq4_xs"}),
        ("TQ2_0", {"token_embd": "q4_k", "attn_v": "q8_0", "exps": "tq2_0", "^output": "q6_k"}),
    ],
)  # fmt: skip
def test_mixture_of_experts_models_follow_llama_quantize_rules(ftype, want):
    got = {c.name: c.target.name for c in make_plan(moe_bundle(), PlanOptions(type=ftype)).choices}
    for part, codec in want.items():
        named = {n: c for n, c in got.items() if re.search(part, n) and "gate_inp" not in n}
        assert named and set(named.values()) == {codec}, (part, named)
    assert {c for n, c in got.items() if "gate_inp" in n} == {"f32"}


def test_mxfp4_moe_in_bailingmoe3_gives_mxfp4_to_stacked_feed_forward_experts_only():
    bundle = moe_bundle("bailingmoe3")
    bundle.tensors["blk.0.attn_q.weight"] = _tensor("blk.0.attn_q.weight", (4, N_EMBD, N_EMBD))
    got = {c.name: c.target.name for c in make_plan(bundle, PlanOptions(type="MXFP4_MOE")).choices}
    assert got["blk.0.attn_q.weight"] == "q8_0"
    assert got["blk.0.ffn_up_exps.weight"] == got["blk.1.ffn_down_exps.weight"] == "mxfp4"
