"""Fitting an importance matrix to a model as llama-quantize does (which tensors get weights,
which mismatches are errors), through the library and the command line, and the metadata
keys the plan records."""

from __future__ import annotations

import json

import numpy as np
import pytest
from conftest import run_cli
from imatrix_files import smollm2_like, write_dat, write_gguf

import bundler
from bundler.bundle import ValueType
from bundler.containers import open_bundle
from bundler.errors import EXIT_INVALID_FORMAT, EXIT_USAGE, ImportanceMismatchError

pytestmark = pytest.mark.realfile


@pytest.fixture(scope="module")
def columns(smollm2_gguf) -> dict[str, int]:
    """Every 2-D weight of SmolLM2 but the token embedding, with its column count (what
    llama-imatrix records for it)."""
    b = open_bundle(smollm2_gguf)
    return {n: t.shape[-1] for n, t in b.tensors.items() if len(t.shape) == 2 and "token" not in n}


@pytest.fixture(scope="module")
def matrix(columns, tmp_path_factory):
    return write_gguf(tmp_path_factory.mktemp("imatrix") / "smollm2.imatrix", smollm2_like(columns))


def _plan(src, ftype="Q4_K_M", **options):
    return bundler.quantize(src, "unused.gguf", ftype, dry_run=True, allow_requantize=True,
                            **options).plan  # fmt: skip


def test_every_changed_tensor_with_an_entry_gets_its_weights(smollm2_gguf, matrix, columns):
    plan = _plan(smollm2_gguf, imatrix=matrix)
    changed = {c.name for c in plan.choices if c.action != "copy"}
    assert set(plan.importance) == changed & set(columns)
    assert all(w.dtype == np.float32 and w.ndim == 1 for w in plan.importance.values())
    assert all(plan.importance[n].size == columns[n] for n in plan.importance)


def test_a_tensor_without_an_entry_is_encoded_without_weights_and_says_so(
    smollm2_gguf, columns, tmp_path
):
    some = dict(list(columns.items())[1:])
    path = write_gguf(tmp_path / "m.gguf", smollm2_like(some))
    plan = _plan(smollm2_gguf, imatrix=path)
    missing = next(iter(columns))
    assert missing not in plan.importance
    assert "no importance data" in next(c.note for c in plan.choices if c.name == missing)


def test_the_plan_records_the_keys_llama_quantize_writes(smollm2_gguf, matrix, columns):
    plan = _plan(smollm2_gguf, imatrix=str(matrix))
    keys = {k: v for k, v in plan.metadata_updates.items() if k.startswith("quantize.")}
    assert list(keys) == [
        "quantize.imatrix.file", "quantize.imatrix.dataset",
        "quantize.imatrix.entries_count", "quantize.imatrix.chunks_count",
    ]  # fmt: skip
    assert keys["quantize.imatrix.file"] == (str(matrix), ValueType.STRING)
    assert keys["quantize.imatrix.dataset"] == ("calibration.txt", ValueType.STRING)
    assert keys["quantize.imatrix.entries_count"] == (len(columns), ValueType.UINT32)
    assert keys["quantize.imatrix.chunks_count"] == (4, ValueType.UINT32)


def test_strings_are_cut_to_127_bytes_and_a_zero_chunk_count_is_not_recorded(
    smollm2_gguf, columns, tmp_path
):
    long = "é" * 100  # 200 bytes: the cut falls inside a character, which is dropped
    path = write_gguf(tmp_path / "m.gguf", smollm2_like(columns), (long,), chunk_count=0)
    keys = _plan(smollm2_gguf, imatrix=path).metadata_updates
    assert keys["quantize.imatrix.dataset"][0] == "é" * 63
    assert "quantize.imatrix.chunks_count" not in keys


def test_include_and_exclude_weights_filter_the_entries_counted(smollm2_gguf, matrix, columns):
    included = _plan(smollm2_gguf, imatrix=matrix, include_weights=["attn_q", "attn_k"])
    excluded = _plan(smollm2_gguf, imatrix=matrix, exclude_weights=["ffn"])
    n_attn = sum("attn_q" in n or "attn_k" in n for n in columns)
    assert included.metadata_updates["quantize.imatrix.entries_count"][0] == n_attn
    assert all("attn_q" in n or "attn_k" in n for n in included.importance)
    assert not [n for n in excluded.importance if "ffn" in n]


def test_a_matrix_filtered_to_nothing_is_as_no_matrix(smollm2_gguf, matrix):
    plan = _plan(smollm2_gguf, "Q4_0", imatrix=matrix, include_weights=["nothing-matches"])
    assert plan.importance == {}
    assert not [k for k in plan.metadata_updates if k.startswith("quantize.")]
    # llama.cpp's Q4_0 guard on the first ffn_down layers applies only with a matrix
    assert {c.target.name for c in plan.choices if "ffn_down" in c.name} == {"q4_0"}


def test_q4_0_widens_the_first_ffn_down_layers_only_with_a_matrix(smollm2_gguf, matrix):
    plan = _plan(smollm2_gguf, "Q4_0", imatrix=matrix)
    down = {c.name: c.target.name for c in plan.choices if "ffn_down" in c.name}
    # 30 layers: the first 30 // 8 = 3 take Q4_1
    assert {n for n, t in down.items() if t == "q4_1"} == {
        f"blk.{i}.ffn_down.weight" for i in range(3)
    }


def test_a_wrong_length_is_an_error_naming_the_tensor(smollm2_gguf, columns, tmp_path):
    wrong = dict(columns, **{"blk.3.attn_q.weight": 960})
    path = write_gguf(tmp_path / "m.gguf", smollm2_like(wrong))
    with pytest.raises(ImportanceMismatchError, match="960 weights but tensor") as err:
        _plan(smollm2_gguf, imatrix=path)
    assert err.value.tensor == "blk.3.attn_q.weight"


def test_a_wrong_length_for_the_token_embedding_is_skipped_as_llama_quantize_does(
    smollm2_gguf, columns, tmp_path
):
    path = write_gguf(tmp_path / "m.gguf", smollm2_like(dict(columns, **{"token_embd.weight": 7})))
    # SmolLM2's token embedding is Q8_0, as the mixture wants it: give it another codec
    plan = _plan(smollm2_gguf, imatrix=path, token_embedding_type="q4_0")
    assert "token_embd.weight" not in plan.importance
    note = next(c.note for c in plan.choices if c.name == "token_embd.weight")
    assert "encoded without them" in note


def test_a_matrix_for_another_model_is_an_error(smollm2_gguf, tmp_path):
    other = {f"model.layers.{i}.mlp.down_proj.weight": 2048 for i in range(4)}
    path = write_dat(tmp_path / "other.dat", {n: (np.ones(c), 10) for n, c in other.items()})
    with pytest.raises(ImportanceMismatchError, match="another model"):
        _plan(smollm2_gguf, imatrix=path)


def test_the_library_takes_a_mapping_of_weights(smollm2_gguf, columns):
    weights = {"blk.0.attn_q.weight": np.full(columns["blk.0.attn_q.weight"], 2.0)}
    plan = _plan(smollm2_gguf, imatrix=weights)
    assert list(plan.importance) == ["blk.0.attn_q.weight"]
    keys = [k for k in plan.metadata_updates if k.startswith("quantize.")]
    assert keys == ["quantize.imatrix.entries_count"]  # no file, dataset or chunks


# ------------------------------------------------------------------ command line


def _cli(smollm2_gguf, tmp_path, *flags):
    return run_cli(
        "quantize", str(smollm2_gguf), "--type", "Q4_K_M", "--allow-requantize", "--dry-run",
        "--json", "-o", str(tmp_path / "out.gguf"), *flags,
    )  # fmt: skip


def test_cli_include_with_exclude_is_a_usage_error(smollm2_gguf, matrix, tmp_path):
    done = _cli(smollm2_gguf, tmp_path, "--imatrix", str(matrix),
                "--include-weights", "attn", "--exclude-weights", "ffn")  # fmt: skip
    assert done.returncode == EXIT_USAGE
    assert "cannot be used together" in done.stderr and "Traceback" not in done.stderr


def test_cli_truncated_matrix_is_an_invalid_format_naming_the_file(smollm2_gguf, matrix, tmp_path):
    cut = tmp_path / "cut.imatrix"
    cut.write_bytes(matrix.read_bytes()[:-4000])
    done = _cli(smollm2_gguf, tmp_path, "--imatrix", str(cut))
    assert done.returncode == EXIT_INVALID_FORMAT
    assert str(cut) in done.stderr and "truncated" in done.stderr
    assert "Traceback" not in done.stderr
    assert not (tmp_path / "out.gguf").exists()


def test_cli_matrix_of_another_model_is_a_usage_error(smollm2_gguf, columns, tmp_path):
    wrong = write_gguf(tmp_path / "m.gguf", smollm2_like({n: 960 for n in columns}))
    done = _cli(smollm2_gguf, tmp_path, "--imatrix", str(wrong))
    assert done.returncode == EXIT_USAGE
    assert "960 weights" in done.stderr and "Traceback" not in done.stderr


def test_cli_dry_run_reports_the_matrix_keys(smollm2_gguf, matrix, columns, tmp_path):
    done = _cli(smollm2_gguf, tmp_path, "--imatrix", str(matrix))
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    weighted = {t["name"] for t in report["tensors"] if t["importance"]}
    assert weighted == set(columns)  # every one changes type from Q4_1
    assert report["imatrix"] == {
        "file": str(matrix), "dataset": "calibration.txt", "entries_count": len(columns),
        "chunks_count": 4, "weighted_tensors": len(columns),
    }  # fmt: skip


def test_cli_summary_names_the_matrix(smollm2_gguf, matrix, columns, tmp_path):
    done = run_cli(
        "quantize", str(smollm2_gguf), "--type", "Q4_K_M", "--allow-requantize", "--dry-run",
        "--imatrix", str(matrix), "-o", str(tmp_path / "o.gguf"),
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    want = f"importance matrix {matrix}: {len(columns)} entries over 4 chunks, "
    assert want + f"{len(columns)} tensors encoded with weights" in done.stdout
