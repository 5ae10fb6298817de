"""The ONNX commands end to end: inspect, validate (one file and two), diff, benchmark,
and the usage error that names the extra when the onnx packages are missing."""

from __future__ import annotations

import json

import onnx
import pytest
from conftest import env_without, run_cli

from bundler.containers.onnx import samples
from bundler.errors import EXIT_VALIDATION


@pytest.fixture(scope="module")
def pair(tmp_path_factory):
    root = tmp_path_factory.mktemp("cli_onnx")
    original, quantized = root / "cnn.onnx", root / "cnn_int8.onnx"
    onnx.save(samples.small_cnn(seed=2), original)
    run_cli("quantize", str(original), "-o", str(quantized), "--bits", "8", check=True)
    return original, quantized


def test_inspect_lists_the_weights(pair):
    done = run_cli("inspect", str(pair[0]), "--json", check=True)
    report = json.loads(done.stdout)
    names = [t["name"] for t in report["tensors"]]
    assert names == ["conv1.weight", "conv1.bias", "conv2.weight", "conv2.bias", "fc.weight",
                     "fc.bias"]  # fmt: skip


def test_validate_one_onnx_file(pair):
    done = run_cli("validate", str(pair[1]))
    assert done.returncode == 0, done.stderr
    assert "onnx" in done.stdout and "valid" in done.stdout


def test_validate_two_files_passes_and_reports_every_part(pair):
    done = run_cli("validate", str(pair[0]), str(pair[1]), "--json", "--detailed")
    assert done.returncode == 0, done.stderr
    r = json.loads(done.stdout)
    assert r["passed"] and r["failures"] == []
    assert r["structure"]["quantized"]["ops"]["DequantizeLinear"] == 3
    assert r["weights"]["quantized"] == 3 and r["weights"]["unchanged"] == 3
    assert {row["name"] for row in r["weights"]["rows"] if row["status"] == "quantized"} == {
        "conv1.weight", "conv2.weight", "fc.weight"
    }  # fmt: skip
    assert r["size"]["ratio"] < 0.4
    logits = r["runtime"]["outputs"]["logits"]
    assert logits["cosine"] > 0.999 and logits["top1"] == 1.0
    assert r["runtime"]["inputs"] == {"image": [1, 3, 32, 32]}


def test_validate_two_files_under_the_threshold_exits_5(pair):
    done = run_cli("validate", str(pair[0]), str(pair[1]), "--threshold", "1.0000001")
    assert done.returncode == 5, done.stderr
    assert "FAILED" in done.stdout and "cosine" in done.stdout


def test_validate_two_files_with_a_bad_input_shape_is_a_usage_error(pair):
    done = run_cli("validate", str(pair[0]), str(pair[1]), "--input-shape", "nope=1x2")
    assert done.returncode == 2 and "names no input" in done.stderr


def test_diff_compares_two_onnx_files(pair, tmp_path):
    same = tmp_path / "same.onnx"
    run_cli("convert", str(pair[0]), "-o", str(same), check=True)
    done = run_cli("diff", str(pair[0]), str(same), "--json")
    assert done.returncode == 0, done.stderr


def test_diff_compares_each_quantized_weight_with_the_original(pair):
    done = run_cli("diff", str(pair[0]), str(pair[1]), "--json")
    assert done.returncode == 0, done.stderr
    r = json.loads(done.stdout)
    weights = {"conv1.weight", "conv2.weight", "fc.weight"}
    compared = {t["name"]: t for t in r["tensors"]}
    assert weights <= set(compared) and r["only_in_a"] == [] and r["only_in_b"] == []
    assert all(0.999 < compared[w]["cosine"] < 1.0 for w in weights)  # int8: close, not equal
    gate = run_cli("diff", str(pair[0]), str(pair[1]), "--threshold", "0.9999999")
    assert gate.returncode == EXIT_VALIDATION and "conv1.weight" in gate.stderr


def test_benchmark_reports_both_models(pair):
    done = run_cli("benchmark", str(pair[0]), str(pair[1]), "--runs", "5", "--warmup", "1",
                   "--json")  # fmt: skip
    assert done.returncode == 0, done.stderr
    r = json.loads(done.stdout)
    for key in ("original", "quantized"):
        row = r[key]
        assert row["latency_median_seconds"] > 0 and row["load_seconds"] > 0
        assert row["latency_p90_seconds"] >= row["latency_median_seconds"]
        assert row["peak_rss_bytes"] > 0
    assert r["quantized"]["file_bytes"] < r["original"]["file_bytes"]


def test_benchmark_of_two_unrelated_models_is_a_usage_error(pair, tmp_path):
    other = tmp_path / "transformer.onnx"
    onnx.save(samples.transformer_block(seed=2), other)
    done = run_cli("benchmark", str(pair[0]), str(other), "--runs", "1")
    assert done.returncode == 2, done.stderr
    assert "take different inputs" in done.stderr and "Traceback" not in done.stderr


def test_without_the_onnx_extra_onnx_commands_name_it(pair, tmp_path):
    env = env_without(tmp_path, "onnx", "onnxruntime")
    done = run_cli("inspect", str(pair[0]), env=env)
    assert done.returncode == 2, done.stderr
    assert "pip install 'bundler[onnx]'" in done.stderr
    assert "Traceback" not in done.stderr


def test_validate_strict_reports_what_onnx_checker_refuses(pair, tmp_path):
    model = onnx.load(pair[0])
    model.graph.node[1].input[0] = "nowhere"
    broken = tmp_path / "broken.onnx"
    onnx.save(model, broken)
    done = run_cli("validate", "--strict", str(broken))
    assert done.returncode == 5 and "onnx.checker refuses it" in done.stdout
    assert run_cli("validate", "--strict", str(pair[1])).returncode == 0
