"""llama-quantize's --override-kv, --tensor-type-file and --prune-layers: parsed as llama.cpp
parses them, refused with usage errors otherwise (the choices they lead to are compared with
llama-quantize's in test_imatrix_oracle.py)."""

from __future__ import annotations

import json

import numpy as np
import pytest
from conftest import run_cli

import bundler
from bundler.bundle import ValueType
from bundler.errors import EXIT_USAGE, UsageError
from bundler.plan import PlanOptions
from bundler.plan.overrides import parse
from bundler.plan.prune import parse_layers


@pytest.mark.parametrize(
    ("text", "want"),
    [
        ("a=int:42", ("a", 42, ValueType.UINT32)),
        ("a=int:-5", ("a", 5, ValueType.UINT32)),  # written as |value|
        ("a=int:5000000000", ("a", 5000000000 % 2**32, ValueType.UINT32)),
        ("a=int:99999999999999999999", ("a", 2**32 - 1, ValueType.UINT32)),  # atol saturates
        ("a=int: 12abc", ("a", 12, ValueType.UINT32)),  # atol: digits up to the first other
        ("a=int:abc", ("a", 0, ValueType.UINT32)),
        ("a=float:0.1", ("a", float(np.float32(0.1)), ValueType.FLOAT32)),
        ("a=float:1e3x", ("a", 1000.0, ValueType.FLOAT32)),
        ("a=float:0x1.8p1", ("a", 3.0, ValueType.FLOAT32)),
        ("a=float:-inf", ("a", float("-inf"), ValueType.FLOAT32)),
        ("a=float:1e999", ("a", float("inf"), ValueType.FLOAT32)),
        ("a=float:x", ("a", 0.0, ValueType.FLOAT32)),
        ("a.b=bool:true", ("a.b", True, ValueType.BOOL)),
        ("a=bool:false", ("a", False, ValueType.BOOL)),
        ("a=str:x=y:z", ("a", "x=y:z", ValueType.STRING)),
        ("a=str:", ("a", "", ValueType.STRING)),
    ],
)
def test_override_kv_parses_as_llama_cpp_and_types_as_llama_quantize_writes(text, want):
    assert parse(text) == want


@pytest.mark.parametrize(
    "text",
    ["=int:1", "a", "a=int", "a=double:1", "a=bool:yes", "a=bool:True", "a=str:" + "x" * 128,
     "k" * 128 + "=int:1"],
)  # fmt: skip
def test_malformed_override_kv_is_a_usage_error_before_any_work(text):
    with pytest.raises(UsageError, match="--override-kv"):
        PlanOptions(type="Q8_0", override_kv=[text])


@pytest.mark.parametrize(
    ("text", "want"),
    [("3,5", [3, 5]), ("5,3,5", [3, 5]), ("0", [0]), (" 4abc,1.5", [1, 4])],  # as std::stoi
)
def test_prune_layers_are_sorted_and_distinct(text, want):
    assert parse_layers(text) == want
    assert PlanOptions(type="Q8_0", prune_layers=text).prune_layers == want


@pytest.mark.parametrize("text", ["", "1,", "-1", "a", "99999999999"])
def test_bad_prune_layers_are_a_usage_error(text):
    with pytest.raises(UsageError, match="invalid layer id"):
        parse_layers(text)


@pytest.mark.realfile
def test_pruning_keeps_matching_importance_weights_by_the_original_names(smollm2_gguf):
    weights = {f"blk.{i}.attn_q.weight": np.full(576, float(i + 1)) for i in range(4)}
    report = bundler.quantize(
        smollm2_gguf,
        "unused.gguf",
        "Q4_K_M",
        dry_run=True,
        allow_requantize=True,
        imatrix=weights,
        prune_layers=[1],
    )
    plan = report.plan
    # blk.2 and blk.3 became blk.1 and blk.2; their weights follow them
    got = {n: float(w[0]) for n, w in plan.importance.items()}
    assert got == {"blk.0.attn_q.weight": 1.0, "blk.1.attn_q.weight": 3.0,
                   "blk.2.attn_q.weight": 4.0}  # fmt: skip
    assert plan.metadata_updates["llama.block_count"] == (29, ValueType.UINT32)


@pytest.mark.realfile
@pytest.mark.parametrize(
    ("content", "problem"),
    [(None, "No such file"), ("attn_q=q8_0 attn_k", "expected REGEX=CODEC")],
)
def test_a_bad_tensor_type_file_is_a_usage_error(smollm2_gguf, tmp_path, content, problem):
    path = tmp_path / "types.txt"
    if content is not None:
        path.write_text(content)
    done = run_cli("quantize", str(smollm2_gguf), "--type", "Q8_0", "--tensor-type-file",
                   str(path), "--dry-run", "-o", str(tmp_path / "o.gguf"))  # fmt: skip
    assert done.returncode == EXIT_USAGE
    assert problem in done.stderr and "Traceback" not in done.stderr


@pytest.mark.realfile
def test_override_kv_reaches_the_written_file(smollm2_gguf, tmp_path):
    out = tmp_path / "o.gguf"
    run_cli("quantize", str(smollm2_gguf), "--type", "Q8_0", "--allow-requantize",
            "--override-kv", "general.name=str:renamed", "--override-kv", "x.n=int:7",
            "-o", str(out), check=True)  # fmt: skip
    b = bundler.open(out)
    assert b.metadata.typed("general.name").value == "renamed"
    assert (b.metadata.typed("x.n").type, b.metadata["x.n"]) == (ValueType.UINT32, 7)
    report = run_cli("inspect", str(out), "--json", check=True)
    assert json.loads(report.stdout)


@pytest.mark.realfile
def test_affine_types_take_the_overrides_and_refuse_an_importance_matrix(minilm_safetensors):
    report = bundler.quantize(minilm_safetensors, "unused.safetensors", "int8", dry_run=True,
                              override_kv=["general.name=str:tiny"])  # fmt: skip
    assert report.plan.metadata_updates["general.name"] == ("tiny", ValueType.STRING)
    with pytest.raises(UsageError, match="--imatrix weighs GGML block codecs"):
        bundler.quantize(minilm_safetensors, "unused.safetensors", "int8", dry_run=True,
                         imatrix={"x": [1.0]})  # fmt: skip
