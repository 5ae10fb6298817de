"""llama.cpp's llama-quantize as the oracle of `bundler quantize`: the SmolLM2 model (Q4_1,
so both requantize: dequantize to float32, then encode) quantized by both tools must hold
the same codec and the same bytes in every tensor, and the same metadata.

llama-quantize is built from the llama-cpp-python sources (tools.reference.llama_quantize).
Without cmake or a compiler the tests skip saying what to install; in CI (CI=true) they fail.
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

import gguf
import numpy as np
import pytest
from conftest import run_cli

from tools.reference import assets

pytestmark = [pytest.mark.oracle_c, pytest.mark.realfile]

IN_CI = os.environ.get("CI") == "true"

#: Q4_K_M always; with the slow tests (15-30 s each, mostly GGUFReader parsing) the presets
#: that bring the other K codecs into play on SmolLM2 (Q2_K: Q3_K; Q5_K_M: Q5_K). The rest
#: are compared by their choices below; their codecs have their own C oracle.
FILE_TYPES = ["Q4_K_M", *(pytest.param(t, marks=pytest.mark.slow) for t in ("Q2_K", "Q5_K_M"))]

#: File types and flags whose per-tensor choices are compared through both tools' --dry-run.
DRY_RUNS = [
    *((t, ()) for t in ("Q3_K_S", "Q3_K_M", "Q3_K_L", "Q4_K_S", "Q5_K_S", "Q6_K")),
    *((t, ()) for t in ("Q4_0", "Q4_1", "Q5_0", "Q5_1", "Q8_0")),
    *((t, ()) for t in ("F16", "BF16")),
    ("Q4_K_M", ("--pure",)),
    ("Q4_K_M", ("--leave-output-tensor",)),
    ("Q4_K_M", ("--output-tensor-type", "f16")),
    ("Q4_K_M", ("--pure", "--output-tensor-type", "f16")),
    ("F16", ("--output-tensor-type", "q4_0")),
    ("Q4_K_M", ("--token-embedding-type", "q4_0")),
    ("Q4_K_M", ("--tensor-type", "token_embd=q4_0", "--output-tensor-type", "f16")),
    ("Q4_K_M", ("--tensor-type", "attn_q=q8_0", "--tensor-type", "ffn_down=q5_k")),
]
#: One line per tensor of llama-quantize --dry-run: name, type, and the new type in
#: parentheses when it changes.
DRY_RUN_LINE = re.compile(r"\]\s+(\S+)\s+- \[.*?type =\s+(\S+), size = [^(]*(?:\((\S+)\))?\s*$")

#: Keys llama-quantize moves to the end of the metadata (it removes and appends what it sets).
RESET_BY_LLAMA_QUANTIZE = ("general.quantization_version", "general.file_type")


@pytest.fixture(scope="session")
def llama_quantize() -> Path:
    """The llama-quantize executable, built and cached on first use."""
    from tools.reference import llama_quantize

    try:
        return llama_quantize.binary()
    except (llama_quantize.ToolchainMissing, assets.AssetUnavailable) as exc:
        if IN_CI:
            pytest.fail(f"llama-quantize unavailable in CI: {exc}")
        pytest.skip(f"llama-quantize unavailable: {exc}")


@pytest.fixture(scope="module", params=FILE_TYPES)
def quantized(request, llama_quantize, smollm2_gguf, tmp_path_factory):
    """(file type, llama-quantize's output, bundler's output) for SmolLM2."""
    from tools.reference.llama_quantize import run

    ftype = request.param
    out = tmp_path_factory.mktemp(f"smollm2-{ftype}")
    oracle, ours = out / "llama-quantize.gguf", out / "bundler.gguf"
    run(smollm2_gguf, oracle, ftype, "--allow-requantize")
    run_cli(
        "quantize", str(smollm2_gguf), "--type", ftype, "--allow-requantize", "-o", str(ours),
        check=True,
    )  # fmt: skip
    return ftype, gguf.GGUFReader(oracle), gguf.GGUFReader(ours)


def _tensors(reader: gguf.GGUFReader) -> dict[str, gguf.ReaderTensor]:
    return {t.name: t for t in reader.tensors}


def _field_bytes(field: gguf.ReaderField) -> bytes:
    """The field exactly as stored: key, value type(s) and value bytes."""
    return b"".join(np.ascontiguousarray(part).tobytes() for part in field.parts)


def test_each_tensor_gets_the_codec_llama_quantize_chooses(quantized):
    _, oracle, ours = quantized
    want = {n: t.tensor_type.name for n, t in _tensors(oracle).items()}
    got = {n: t.tensor_type.name for n, t in _tensors(ours).items()}
    assert sorted(got) == sorted(want)
    assert {n: (got[n], want[n]) for n in want if got[n] != want[n]} == {}


def test_each_tensor_holds_the_bytes_llama_quantize_writes(quantized):
    _, oracle, ours = quantized
    want, got = _tensors(oracle), _tensors(ours)
    differ = {}
    for name, t in want.items():
        mine = got[name]
        if mine.tensor_type != t.tensor_type or not np.array_equal(
            np.asarray(mine.data).view(np.uint8), np.asarray(t.data).view(np.uint8)
        ):
            differ[name] = t.tensor_type.name
    assert differ == {}, f"{len(differ)} of {len(want)} tensors differ: {differ}"


def test_file_type_and_metadata_match_llama_quantize(quantized):
    _, oracle, ours = quantized
    want = {k: f for k, f in oracle.fields.items() if not k.startswith("GGUF.")}
    got = {k: f for k, f in ours.fields.items() if not k.startswith("GGUF.")}
    assert int(got["general.file_type"].contents()) == int(want["general.file_type"].contents())
    assert sorted(got) == sorted(want)
    assert [k for k in want if _field_bytes(got[k]) != _field_bytes(want[k])] == []


def test_metadata_order_is_the_source_order_but_for_the_keys_llama_quantize_resets(quantized):
    _, oracle, ours = quantized
    keys = [k for k in ours.fields if not k.startswith("GGUF.")]
    moved = [k for k in keys if k not in RESET_BY_LLAMA_QUANTIZE] + list(RESET_BY_LLAMA_QUANTIZE)
    assert [k for k in oracle.fields if not k.startswith("GGUF.")] == moved


@pytest.mark.parametrize(("ftype", "flags"), DRY_RUNS, ids=lambda v: " ".join(v) or "-")
def test_flags_choose_each_codec_as_llama_quantize_does(
    ftype, flags, llama_quantize, smollm2_gguf, tmp_path
):
    from tools.reference.llama_quantize import run

    done = run(
        smollm2_gguf, tmp_path / "unused.gguf", ftype, "--allow-requantize", "--dry-run", *flags
    )
    lines = (DRY_RUN_LINE.search(line) for line in (done.stdout + done.stderr).splitlines())
    want = {m[1]: (m[3] or m[2]).lower() for m in lines if m}
    ours = run_cli(
        "quantize", str(smollm2_gguf), "--type", ftype, "--allow-requantize", *flags,
        "--dry-run", "--json", "-o", str(tmp_path / "unused.gguf"), check=True,
    )  # fmt: skip
    got = {t["name"]: t["to"] for t in json.loads(ours.stdout)["tensors"]}
    assert len(want) == 272
    assert {n: (got.get(n), c) for n, c in want.items() if got.get(n) != c} == {}
