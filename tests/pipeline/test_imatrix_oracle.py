"""llama.cpp's llama-imatrix and llama-quantize as the oracles of importance matrices and
of llama-quantize's remaining flags.

A real matrix of SmolLM2-135M (llama-imatrix over llama.cpp's README, which ships in the
llama-cpp-python source distribution; 4 chunks of 128 tokens; built and cached by
tools.reference.llama_imatrix) is read as the `gguf` package reads it and as llama-imatrix
writes it in its legacy form; both tools given the same matrix and flags choose the same
codec for every tensor (`--dry-run`) and write the same metadata.

Without cmake or a compiler the tests skip saying what to install; in CI (CI=true) they fail.
"""

from __future__ import annotations

import re
from pathlib import Path

import gguf
import numpy as np
import pytest
from conftest import reference_tool, run_cli, run_cli_clean
from test_llama_quantize_oracle import (
    LOW_BIT_FILE_TYPES,
    RESET_BY_LLAMA_QUANTIZE,
    _field_bytes,
    dry_run_choices,
)

from bundler.codecs import get
from bundler.importance import read

pytestmark = [pytest.mark.oracle_c, pytest.mark.realfile]


@pytest.fixture(scope="session")
def real_imatrix_dat() -> Path:
    """The same matrix in llama-imatrix's legacy form (`--output-format dat`)."""
    from tools.reference import llama_imatrix

    return reference_tool(lambda: llama_imatrix.smollm2_matrix("dat"), "reference tool")


# ------------------------------------------------------------------ reading real matrices


def test_real_matrix_weights_are_in_sum2_over_counts_as_the_gguf_package_reads_them(
    real_imatrix,
):
    reader = gguf.GGUFReader(real_imatrix)
    tensors = {t.name: np.asarray(t.data, np.float32) for t in reader.tensors}
    ours = read(real_imatrix)
    names = sorted(n.removesuffix(".in_sum2") for n in tensors if n.endswith(".in_sum2"))
    assert sorted(ours.entries) == names
    assert len(names) == 30 * 7  # q, k, v, output, gate, up, down of 30 blocks
    for name in names:
        sums = tensors[f"{name}.in_sum2"].reshape(-1)
        counts = tensors[f"{name}.counts"].reshape(-1)
        assert counts.size == 1 and counts[0] > 0
        want = sums / np.float32(np.round(counts[0]))
        assert ours.entries[name].tobytes() == want.astype(np.float32).tobytes(), name
    fields = reader.fields
    assert ours.chunk_count == int(fields["imatrix.chunk_count"].contents()) == 4
    assert ours.chunk_size == int(fields["imatrix.chunk_size"].contents()) == 128
    assert list(ours.datasets) == fields["imatrix.datasets"].contents()
    assert ours.datasets[0].endswith("README.md")


def test_real_legacy_matrix_holds_the_same_weights(real_imatrix, real_imatrix_dat):
    new, old = read(real_imatrix), read(real_imatrix_dat)
    assert old.legacy and not new.legacy
    assert sorted(old.entries) == sorted(new.entries)
    for name, weights in new.entries.items():
        # the legacy form stores mean * ncall, then divides by ncall: a rounding apart
        np.testing.assert_allclose(old.entries[name], weights, rtol=2e-6, err_msg=name)
    assert (old.chunk_count, old.datasets) == (new.chunk_count, new.datasets)


# ------------------------------------------------------------------ per-tensor choices


@pytest.mark.parametrize(
    ("ftype", "flags"),
    [
        ("Q4_0", ("--imatrix", "{imatrix}")),  # ffn_down guard of the first layers
        ("IQ4_XS", ("--imatrix", "{imatrix}")),  # no Q5_K ffn_down with a matrix
        ("Q5_0", ("--imatrix", "{imatrix_dat}")),
        ("Q4_0", ("--imatrix", "{imatrix}", "--include-weights", "attn")),
        ("Q4_K_M", ("--imatrix", "{imatrix}", "--exclude-weights", "blk.1")),
        ("Q4_K_M", ("--prune-layers", "3,5,29")),
        ("Q3_K_M", ("--prune-layers", "0")),
        ("Q4_K_M", ("--override-kv", "llama.block_count=int:40")),
        ("Q4_K_M", ("--tensor-type-file", "{tensor_types}", "--tensor-type", "ATTN_Q=q8_0")),
        # the file types llama-quantize writes from its low-bit rules, with the matrix most
        # of them need (IQ3_XXS's attn_v and ffn_down rules differ with one)
        *((t, ("--imatrix", "{imatrix}")) for t in LOW_BIT_FILE_TYPES),
    ],
    ids=lambda v: " ".join(v).replace("{", "").replace("}", "") if isinstance(v, tuple) else v,
)
def test_flags_choose_each_codec_as_llama_quantize_does(
    ftype, flags, llama_quantize, smollm2_f32_gguf, tmp_path, request
):
    types = tmp_path / "types.txt"
    types.write_text("ffn_up=q5_k\n  attn_k=q8_0   \n\nffn_gate=f16\n")
    given = {"tensor_types": types}
    for name in ("imatrix", "imatrix_dat"):  # built only for the cases that use them
        if any(f"{{{name}}}" in f for f in flags):
            given[name] = request.getfixturevalue(f"real_{name}")
    flags = [f.format(**given) for f in flags]
    want, got = dry_run_choices(smollm2_f32_gguf, tmp_path, ftype, *flags)
    assert len(want) >= 272 - 3 * 9
    assert {n: (got.get(n), c) for n, c in want.items() if got.get(n) != c} == {}
    assert sorted(got) == sorted(want)


@pytest.mark.parametrize(
    ("ftype", "flags", "theirs", "ours"),
    [
        ("IQ2_XXS", (), "offending tensor: blk.3.ffn_down.weight", "needs an importance matrix"),
        ("Q2_K_S", (), "offending tensor: blk.3.ffn_down.weight", "needs an importance matrix"),
        (
            "IQ2_M",
            ("--imatrix", "{imatrix}", "--exclude-weights", "blk.5.ffn_down"),
            "Missing importance matrix for tensor blk.5.ffn_down.weight",
            "the importance matrix has no weights for 1 tensor",
        ),
    ],
    ids=["IQ2_XXS", "Q2_K_S", "IQ2_M-exclude"],
)
def test_both_tools_refuse_low_bit_tensors_without_importance_weights(
    ftype, flags, theirs, ours, llama_quantize, smollm2_gguf, real_imatrix, tmp_path
):
    from tools.reference.llama_quantize import run

    flags = ["--allow-requantize", *(str(real_imatrix) if f == "{imatrix}" else f for f in flags)]
    with pytest.raises(RuntimeError, match=re.escape(theirs)):
        run(smollm2_gguf, tmp_path / "llama-quantize.gguf", ftype, *flags)
    out = tmp_path / "bundler.gguf"
    done = run_cli_clean("quantize", str(smollm2_gguf), "--type", ftype, *flags, "-o", str(out))
    assert done.returncode == 2
    assert ours in done.stderr and "--imatrix" in done.stderr
    assert "blk.5.ffn_down.weight" in done.stderr and not out.exists()


# ------------------------------------------------------------------ metadata written


@pytest.fixture(scope="module")
def written_f16(llama_quantize, smollm2_gguf, real_imatrix, tmp_path_factory):
    """SmolLM2 written as F16 by both tools with the real matrix and overrides of each type
    (F16 ignores the weights, so the metadata is compared without weighted encoders)."""
    from tools.reference.llama_quantize import run

    out = tmp_path_factory.mktemp("imatrix-f16")
    flags = (
        "--allow-requantize", "--imatrix", str(real_imatrix), "--exclude-weights", "blk.2.",
        "--override-kv", "general.name=str:SmolLM2 pruned",
        "--override-kv", "test.count=int:-7", "--override-kv", "test.ratio=float:0.1",
        "--override-kv", "test.flag=bool:true", "--prune-layers", "2,7",
    )  # fmt: skip
    oracle, ours = out / "llama-quantize.gguf", out / "bundler.gguf"
    run(smollm2_gguf, oracle, "F16", *flags)
    run_cli("quantize", str(smollm2_gguf), "--type", "F16", *flags, "-o", str(ours), check=True)
    return real_imatrix, gguf.GGUFReader(oracle), gguf.GGUFReader(ours)


def test_metadata_keys_equal_llama_quantizes(written_f16):
    matrix, oracle, ours = written_f16
    want = {k: f for k, f in oracle.fields.items() if not k.startswith("GGUF.")}
    got = {k: f for k, f in ours.fields.items() if not k.startswith("GGUF.")}
    assert sorted(got) == sorted(want)
    assert [k for k in want if _field_bytes(got[k]) != _field_bytes(want[k])] == []
    assert got["quantize.imatrix.file"].contents() == str(matrix)
    # 210 entries, less blk.2's seven
    assert got["quantize.imatrix.entries_count"].contents() == 203
    assert got["llama.block_count"].contents() == 28


def test_new_keys_follow_the_source_keys_in_llama_quantizes_order(written_f16):
    _, oracle, ours = written_f16
    new = ("test.", "quantize.")
    moved = ("general.name", "llama.block_count", *RESET_BY_LLAMA_QUANTIZE)

    def source(reader):
        return [k for k in reader.fields if not k.startswith(("GGUF.", *new)) and k not in moved]

    # llama-quantize moves every key it sets to the end; bundler keeps a key's place
    assert source(oracle) == source(ours)
    assert [k for k in oracle.fields if k.startswith(new)] == [
        k for k in ours.fields if k.startswith(new)
    ]
    assert list(ours.fields)[-7:] == [k for k in oracle.fields if k.startswith(new)]


def test_tensors_are_the_same_after_pruning(written_f16):
    _, oracle, ours = written_f16
    want = {t.name: t for t in oracle.tensors}
    got = {t.name: t for t in ours.tensors}
    assert sorted(got) == sorted(want) and len(got) == 272 - 2 * 9
    differ = [
        n for n, t in want.items()
        if got[n].tensor_type != t.tensor_type
        or not np.array_equal(np.asarray(got[n].data).view(np.uint8),
                              np.asarray(t.data).view(np.uint8))
    ]  # fmt: skip
    assert differ == []


# ------------------------------------------------------------------ weighted bytes


#: The lattice file types of the slow whole-file comparisons and the codecs they wait for.
LATTICE = {
    "IQ3_M": ("iq3_s",), "IQ2_M": ("iq2_s", "iq3_s"), "IQ1_S": ("iq1_s",), "IQ1_M": ("iq1_m",),
}  # fmt: skip


def encoders_pending(*codecs: str) -> pytest.MarkDecorator:
    """A failure expected (strict) while bundler cannot encode one of `codecs` (the plan is
    proven by the dry runs above); none once it can."""
    missing = [c for c in codecs if not get(c).facts.has_kernels]
    return pytest.mark.xfail(
        bool(missing), reason=f"no {', '.join(missing)} encoder yet", strict=True
    )


#: Q4_K_M, TQ2_0 (ternary ffn_down, weighted Q4_0 fallbacks) and Q2_K_S (weighted Q2_K and
#: Q4_K ffn_down, Q4_0 fallbacks) always; with the slow tests Q3_K_M (Q4_0/Q5_0/Q5_1
#: fallbacks and Q4_K/Q5_K on SmolLM2's 576-column rows), Q4_0 (its ffn_down guard takes
#: weighted Q4_1), IQ4_XS (weighted IQ4_XS and IQ4_NL fallbacks), IQ3_M (IQ3_S ffn_down,
#: Q4_K in its first eighth, IQ4_NL and Q5_0 fallbacks), IQ2_M (IQ2_S ffn_down, IQ3_S in
#: its first eighth); with `-m long` IQ1_S and IQ1_M (their codec in ffn_down, Q2_K in its
#: first eighth). The lattice four expect a failure while bundler has no encoder for their
#: codecs, and run as soon as it has.
WEIGHTED = [
    "Q4_K_M",
    "TQ2_0",
    "Q2_K_S",
    *(pytest.param(t, marks=pytest.mark.slow) for t in ("Q3_K_M", "Q4_0", "IQ4_XS")),
    *(
        pytest.param(t, marks=[pytest.mark.slow, encoders_pending(*codecs)])
        for t, codecs in LATTICE.items()
        if t in ("IQ3_M", "IQ2_M")
    ),
    *(
        pytest.param(t, marks=[pytest.mark.long, encoders_pending(*codecs)])
        for t, codecs in LATTICE.items()
        if t not in ("IQ3_M", "IQ2_M")
    ),
]


@pytest.fixture(scope="module", params=WEIGHTED)
def quantized_weighted(request, llama_quantize, smollm2_gguf, real_imatrix, tmp_path_factory):
    """(llama-quantize's output, bundler's output) for SmolLM2 (Q4_1, so both decode it to
    float32 first) with the real importance matrix."""
    from tools.reference.llama_quantize import run

    ftype = request.param
    out = tmp_path_factory.mktemp(f"smollm2-imatrix-{ftype}")
    oracle, ours = out / "llama-quantize.gguf", out / "bundler.gguf"
    flags = ("--allow-requantize", "--imatrix", str(real_imatrix))
    run(smollm2_gguf, oracle, ftype, *flags)
    run_cli("quantize", str(smollm2_gguf), "--type", ftype, *flags, "-o", str(ours), check=True)
    return gguf.GGUFReader(oracle), gguf.GGUFReader(ours)


def test_weighted_tensors_hold_the_bytes_llama_quantize_writes(quantized_weighted):
    oracle, ours = quantized_weighted
    want = {t.name: t for t in oracle.tensors}
    got = {t.name: t for t in ours.tensors}
    assert sorted(got) == sorted(want)
    differ = {
        n: (got[n].tensor_type.name, t.tensor_type.name) for n, t in want.items()
        if got[n].tensor_type != t.tensor_type
        or not np.array_equal(np.asarray(got[n].data).view(np.uint8),
                              np.asarray(t.data).view(np.uint8))
    }  # fmt: skip
    assert differ == {}, f"{len(differ)} of {len(want)} tensors differ: {differ}"


def test_weighted_output_metadata_equals_llama_quantizes(quantized_weighted):
    oracle, ours = quantized_weighted
    want = {k: f for k, f in oracle.fields.items() if not k.startswith("GGUF.")}
    got = {k: f for k, f in ours.fields.items() if not k.startswith("GGUF.")}
    assert sorted(got) == sorted(want)
    assert [k for k in want if _field_bytes(got[k]) != _field_bytes(want[k])] == []
    assert "quantize.imatrix.chunks_count" in got
