"""`bundler diff` through the installed command: identical files, the error figures of a
quantized output checked against `error_stats` on the decoded tensors, the --threshold
gate, and tensors or metadata present on one side only."""

from __future__ import annotations

import functools
import json

import numpy as np
import pytest
from conftest import run_cli, run_cli_clean, run_cli_json

import bundler
from bundler.stats import error_stats

_diff = functools.partial(run_cli_clean, "diff")
_diff_json = functools.partial(run_cli_json, "diff")


@pytest.fixture(scope="module")
def quantized(minilm_safetensors, tmp_path_factory):
    """MiniLM quantized to Q8_0 and to Q4_0 (GGUF), by the installed command."""
    out = tmp_path_factory.mktemp("diff")
    paths = {}
    for codec in ("q8_0", "q4_0"):
        paths[codec] = out / f"minilm-{codec}.gguf"
        run_cli(
            "quantize", str(minilm_safetensors), "-o", str(paths[codec]), "--type", codec, "-q",
            check=True,
        )  # fmt: skip
    return paths


@pytest.mark.slow  # decodes and compares 134M values twice over (about 15 s on 2 cores)
def test_a_file_against_itself_has_cosine_one_and_no_error(smollm2_gguf):
    code, report = _diff_json(str(smollm2_gguf), str(smollm2_gguf), "--threshold", "1")
    assert code == 0
    assert len(report["tensors"]) == 272 and report["below_threshold"] == []
    for row in report["tensors"]:
        assert row["rmse"] == 0.0 and row["max_abs"] == 0.0 and row["error"] is None
        assert row["cosine"] == pytest.approx(1.0, abs=1e-12)
    assert report["only_in_a"] == report["only_in_b"] == report["shape_mismatches"] == []
    md = report["metadata"]
    assert (md["same"], md["different"], md["only_in_a"], md["only_in_b"]) == (33, [], [], [])


def test_quantized_output_figures_equal_error_stats_of_the_decoded_tensors(
    minilm_safetensors, quantized
):
    code, report = _diff_json(str(minilm_safetensors), str(quantized["q8_0"]))
    assert code == 0
    a, b = bundler.open(minilm_safetensors), bundler.open(quantized["q8_0"])
    rows = {r["name"]: r for r in report["tensors"]}
    assert len(rows) == 104
    for name, ta in a.tensors.items():
        stats = error_stats(ta.numpy(), b.tensors[name].numpy())
        got = rows[name]
        assert (got["rmse"], got["cosine"], got["max_abs"]) == (
            stats.rmse,
            stats.cosine,
            stats.max_abs,
        )
        assert got["cosine"] > 0.999
        if got["codec_b"] == "q8_0":
            assert got["rmse"] > 0
    assert {r["codec_b"] for r in rows.values()} == {"f32", "i64", "q8_0"}
    assert report["metadata"]["only_in_b"] == ["general.file_type", "general.quantization_version"]


def test_threshold_fails_with_exit_5_naming_the_tensors_below_it(minilm_safetensors, quantized):
    done = _diff(str(minilm_safetensors), str(quantized["q4_0"]), "--threshold", "0.9999", "--json")
    report = json.loads(done.stdout)
    below = report["below_threshold"]
    assert done.returncode == 5 and below
    rows = {r["name"]: r for r in report["tensors"]}
    assert set(below) == {n for n, r in rows.items() if r["cosine"] < 0.9999}
    said = f"{len(below)} of {len(rows)} compared tensor(s) have a cosine similarity below 0.9999"
    assert f"{said}: {below[0]}, " in done.stderr


@pytest.fixture
def small_pair(tmp_path):
    """Two small bundles in different formats that differ in every way diff reports."""
    rng = np.random.default_rng(1)
    w = rng.standard_normal((4, 64)).astype(np.float32)
    bundler.save({"w": w, "only_a": w, "s": w}, tmp_path / "a.gguf", metadata={"k": 1, "x": "a"})
    bundler.save(
        {"w": w, "only_b": w, "s": w.reshape(8, 32)},
        tmp_path / "b.safetensors",
        metadata={"k": 2, "y": "b"},
    )
    return str(tmp_path / "a.gguf"), str(tmp_path / "b.safetensors")


def test_tensors_on_one_side_and_shape_mismatches_are_reported(small_pair):
    code, report = _diff_json(*small_pair, "--threshold", "0.9999")
    assert code == 0
    assert [r["name"] for r in report["tensors"]] == ["w"]
    assert report["only_in_a"] == ["only_a"] and report["only_in_b"] == ["only_b"]
    assert report["shape_mismatches"] == [{"name": "s", "shape_a": [4, 64], "shape_b": [8, 32]}]
    md = report["metadata"]
    assert md["only_in_a"] == ["x"] and md["only_in_b"] == ["y"]
    assert md["different"] == [
        {"key": "k", "a": {"type": "INT32", "value": 1}, "b": {"type": "INT32", "value": 2}}
    ]


def test_human_output_lists_figures_and_differences(small_pair):
    done = _diff(*small_pair)
    assert done.returncode == 0
    out = done.stdout.splitlines()
    assert out[0].startswith("A: ") and out[0].endswith("(gguf)")
    row = next(x for x in out if x.startswith("w "))
    assert row.split() == ["w", "4x64", "f32", "0.0000e+00", "0.0000e+00", "1.000000"]
    assert out[out.index("1 tensor(s) only in A, not compared:") + 1] == "  only_a"
    assert out[out.index("1 tensor(s) only in B, not compared:") + 1] == "  only_b"
    assert "shape mismatch: s: A [4, 64] vs B [8, 32]" in out
    assert "metadata: 0 same, 1 different, 1 only in A, 1 only in B" in out
    assert "  k: INT32 1 -> INT32 2" in out


@pytest.mark.parametrize("threshold", [[], ["--threshold", "0.99"]], ids=["plain", "threshold"])
def test_two_unrelated_models_exit_5_saying_nothing_was_compared(
    smollm2_gguf, minilm_safetensors, threshold
):
    done = _diff(str(smollm2_gguf), str(minilm_safetensors), *threshold)
    assert done.returncode == 5
    assert done.stderr.strip().splitlines() == [
        f"bundler: error: nothing compared: {smollm2_gguf} and {minilm_safetensors} have no "
        "tensor of the same name and shape (272 only in A, 104 only in B, 0 of different shapes)"
    ]
    out = done.stdout.splitlines()
    # the unmatched names, one per line and at most ten of them per side
    start = out.index("272 tensor(s) only in A, not compared:")
    assert out[start + 1 : start + 3] == ["  token_embd.weight", "  blk.0.attn_norm.weight"]
    assert out[start + 11] == "  ... and 262 more (--json lists them all)"
    assert max(len(line) for line in out) < 400


def test_the_threshold_gates_only_on_compared_tensors_and_says_how_many(small_pair):
    done = _diff(*small_pair, "--threshold", "0.5")
    assert done.returncode == 0
    assert "threshold 0.5: 0 of the 1 compared tensor(s) below" in done.stdout.splitlines()
