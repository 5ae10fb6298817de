"""Size targets on real models: SmolLM2 decoded to F32 (GGUF) and all-MiniLM-L6-v2
(SafeTensors), written as GGUF and SafeTensors for targets across the reachable range.
The written file's size is the predicted one exactly and never over the target; each
tensor holds the codec the plan chose; a target below the smallest reachable file is a
usage error naming that size, with nothing written."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest
from conftest import run_cli

import bundler
from bundler.containers import open_bundle
from bundler.errors import UsageError
from bundler.pipeline import quantize

pytestmark = pytest.mark.realfile

#: Values measured per tensor in these tests: sizes do not depend on it, and it keeps the
#: measuring short (the default measures eight times as many).
SAMPLE = 1 << 14


def _reach(src, dst: str) -> tuple[int, int]:
    """The smallest and largest files the candidates make for `src` written to `dst`."""
    report = quantize(src, dst, target_size="1T", dry_run=True, sample_values=SAMPLE)
    a = report.plan.allocation
    return a.minimum_bytes, a.maximum_bytes


def _written_as_planned(report, path) -> None:
    a = report.plan.allocation
    size = os.path.getsize(path)
    assert size == a.predicted_bytes  # the prediction is the layout, not an estimate
    assert size <= a.target_bytes
    codecs = {n: t.codec.name for n, t in open_bundle(path).tensors.items()}
    assert codecs == {c.name: c.target.name for c in report.plan.choices}


@pytest.fixture(scope="module")
def smollm2_reach(smollm2_f32_gguf, tmp_path_factory):
    return _reach(smollm2_f32_gguf, str(tmp_path_factory.mktemp("reach") / "x.gguf"))


@pytest.mark.parametrize(
    "fraction",
    [
        0.0,
        pytest.param(0.1, marks=pytest.mark.slow),
        0.5,
        pytest.param(0.9, marks=pytest.mark.slow),
    ],
)
def test_smollm2_gguf_fits_each_target_exactly_as_predicted(
    smollm2_f32_gguf, smollm2_reach, tmp_path, fraction
):
    low, high = smollm2_reach
    target = low + int(fraction * (high - low))
    out = tmp_path / "out.gguf"
    report = quantize(smollm2_f32_gguf, out, target_size=target, sample_values=SAMPLE)
    _written_as_planned(report, out)
    a = report.plan.allocation
    assert a.target_bytes - a.predicted_bytes < 0.01 * target or fraction == 0.9
    assert sum(a.mix.values()) == len(report.plan.choices) == 272


@pytest.mark.slow
def test_smollm2_less_room_never_means_less_error(smollm2_f32_gguf, smollm2_reach, tmp_path):
    low, high = smollm2_reach
    errors = []
    for fraction in (0.05, 0.3, 0.6):
        report = quantize(
            smollm2_f32_gguf, tmp_path / "x.gguf", dry_run=True, sample_values=SAMPLE,
            target_size=low + int(fraction * (high - low)),
        )  # fmt: skip
        errors.append(report.plan.allocation.predicted_error)
    assert errors == sorted(errors, reverse=True) and errors[0] > errors[-1]


def test_smollm2_to_safetensors_fits_its_target(smollm2_f32_gguf, tmp_path):
    out = tmp_path / "out.safetensors"
    report = quantize(smollm2_f32_gguf, out, target_bpw=4.5, sample_values=SAMPLE)
    _written_as_planned(report, out)
    n = sum(t.n_values for t in open_bundle(smollm2_f32_gguf).tensors.values())
    assert report.plan.allocation.target_bytes == int(4.5 * n // 8)


@pytest.mark.parametrize("ext", ["gguf", "safetensors"])
@pytest.mark.parametrize(
    "target", [{"target_bpw": 4.6}, {"target_bpw": 6.5}, {"target_size": "20M"}]
)
def test_minilm_fits_each_target_in_each_format(minilm_safetensors, tmp_path, ext, target):
    out = tmp_path / f"out.{ext}"
    report = quantize(minilm_safetensors, out, **target)
    _written_as_planned(report, out)
    assert report.plan.allocation.sampled_tensors > 0  # the default sample, on real tensors


def test_a_target_below_the_smallest_file_is_a_usage_error_naming_it(minilm_safetensors, tmp_path):
    out = tmp_path / "out.gguf"
    with pytest.raises(UsageError, match=r"below the smallest file reachable: [\d,]+ bytes") as e:
        quantize(minilm_safetensors, out, target_size="5M", sample_values=SAMPLE)
    low = int(str(e.value).split("reachable: ")[1].split(" bytes")[0].replace(",", ""))
    assert 5_000_000 < low < 20_000_000
    assert not out.exists()
    report = quantize(minilm_safetensors, out, target_size=low, sample_values=SAMPLE)
    _written_as_planned(report, out)  # the minimum named is reachable


def test_the_cli_refuses_an_unreachable_target_with_exit_2(minilm_safetensors, tmp_path):
    out = tmp_path / "out.gguf"
    done = run_cli("quantize", str(minilm_safetensors), "-o", str(out), "--target-size", "1MiB")
    assert done.returncode == 2
    assert "size target 1,048,576 bytes" in done.stderr
    assert "smallest file reachable" in done.stderr and "Traceback" not in done.stderr
    assert not out.exists()


@pytest.mark.parametrize(
    ("flags", "message"),
    [(["--target-size", "20M", "--type", "q4_0"], "drop --type"),
     (["--target-size", "20M", "--pure"], "--pure"),
     (["--target-size", "20M", "--bits", "4"], "affine options"),
     (["--target-size", "20M", "--target-bpw", "4"], "not allowed with"),
     (["--target-size", "20M", "--candidates", "q8_k"], "--candidates: q8_k"),
     (["--type", "q4_0", "--candidates", "q4_0"], "--candidates needs"),
     (["--target-size", "twenty"], "not a size"),
     (["--target-bpw", "-2"], "must be positive")],
)  # fmt: skip
def test_target_flag_mistakes_are_usage_errors(minilm_safetensors, tmp_path, flags, message):
    done = run_cli("quantize", str(minilm_safetensors), "-o", str(tmp_path / "o.gguf"), *flags)
    assert done.returncode == 2, done.stderr
    assert message in done.stderr and "Traceback" not in done.stderr


def test_a_target_needs_an_output_whose_size_is_known_up_front(minilm_safetensors, tmp_path):
    out = tmp_path / "o.apr"
    done = run_cli("quantize", str(minilm_safetensors), "-o", str(out), "--target-size", "20M")
    assert done.returncode == 2
    assert "a size target needs an output whose size is known up front" in done.stderr
    assert "gguf" in done.stderr and not out.exists()


def test_dry_run_json_reports_the_mix_size_and_error_and_writes_nothing(
    minilm_safetensors, tmp_path
):
    out = tmp_path / "out.gguf"
    done = run_cli(
        "quantize", str(minilm_safetensors), "-o", str(out), "--target-bpw", "6", "--dry-run",
        "--json", "--candidates", "q4_0,q8_0,f16", check=True,
    )  # fmt: skip
    target = json.loads(done.stdout)["target"]
    assert not out.exists()
    assert set(target["mix"]) <= {"q4_0", "q8_0", "f16", "f32", "i64"}
    assert sum(target["mix"].values()) == 104  # all-MiniLM-L6-v2 has 104 tensors
    assert target["minimum_bytes"] <= target["predicted_bytes"] <= target["target_bytes"]
    assert target["predicted_error"] == pytest.approx(sum(target["errors"].values()))
    assert target["sensitivity"] == "none"  # an encoder the estimate does not recognise
    human = run_cli(
        "quantize", str(minilm_safetensors), "-o", str(out), "--target-bpw", "6", "--dry-run",
        "--candidates", "q4_0,q8_0,f16", check=True,
    ).stdout  # fmt: skip
    assert f"predicted    = {target['predicted_bytes']:,} bytes" in human
    assert "chosen mix   = " in human


def test_pinned_and_kept_tensors_keep_their_codecs(minilm_safetensors, tmp_path):
    report = quantize(
        minilm_safetensors, tmp_path / "o.gguf", target_bpw=5.0, dry_run=True,
        tensor_types=[("attention\\.self\\.query", "q8_0")], sample_values=SAMPLE,
    )  # fmt: skip
    for c in report.plan.choices:
        if "attention.self.query.weight" in c.name:
            assert c.target.name == "q8_0" and "--tensor-type" in c.note
        if len(c.shape) == 1:
            assert c.kept and c.target == c.source


def test_the_library_exports_the_target_api():
    assert bundler.quantize is quantize


def test_column_weights_steer_bytes_to_the_columns_that_matter(minilm_safetensors, tmp_path):
    """An importance matrix that makes one tensor's inputs loud and another's quiet gives
    the first a wider codec than the second; uncovered tensors take the mean weight."""
    loud, quiet = (f"encoder.layer.{i}.attention.self.query.weight" for i in (0, 1))
    weights = {loud: np.full(384, 1e4), quiet: np.full(384, 1e-4)}
    report = quantize(
        minilm_safetensors, tmp_path / "o.gguf", target_bpw=5.0, dry_run=True,
        column_weights=weights, sample_values=SAMPLE,
    )  # fmt: skip
    a = report.plan.allocation
    chosen = {c.name: c for c in report.plan.choices}
    assert a.weighted
    assert chosen[loud].target_bytes > chosen[quiet].target_bytes
    # the smallest candidates for rows of 384 are Q4_0 and IQ4_NL (18 bytes per 32 values)
    assert chosen[quiet].target.name in ("q4_0", "iq4_nl")


def _weighted_error(original, quantized, weights) -> float:
    """sum over the weighted tensors of sum_j w_j * sum_i (W_ij - Q(W)_ij)^2."""
    a, b = open_bundle(original), open_bundle(quantized)
    total = 0.0
    for name, w in weights.items():
        d = b.tensors[name].numpy().astype(np.float64) - a.tensors[name].numpy()
        total += float(np.square(d).reshape(-1, w.size).sum(axis=0) @ w)
    return total


@pytest.mark.oracle_c
def test_an_importance_matrix_lowers_the_error_it_weighs_at_the_same_size(
    smollm2_f32_gguf, smollm2_reach, real_imatrix, tmp_path
):
    from bundler.importance import read

    low, high = smollm2_reach
    target = low + (high - low) // 4
    # without Q4_1 and Q5_1, which rebuild this F32 decoding of a Q4_1 file exactly
    candidates = "q2_k,q3_k,q4_0,q4_k,q5_0,q5_k,q6_k,q8_0"
    runs = {}
    for name, extra in (("plain", {}), ("imatrix", {"imatrix": real_imatrix})):
        out = tmp_path / f"{name}.gguf"
        report = quantize(
            smollm2_f32_gguf, out, target_size=target, candidates=candidates,
            sample_values=SAMPLE, **extra,
        )  # fmt: skip
        _written_as_planned(report, out)
        runs[name] = out
    metadata = open_bundle(runs["imatrix"]).metadata
    assert metadata["quantize.imatrix.entries_count"] == 210
    assert "quantize.imatrix.file" not in open_bundle(runs["plain"]).metadata
    weights = {n: w for n, w in read(real_imatrix).entries.items() if w.size > 0}
    weights = {n: w for n, w in weights.items() if n in open_bundle(smollm2_f32_gguf).tensors}
    plain, weighted = (_weighted_error(smollm2_f32_gguf, runs[k], weights) for k in runs)
    assert weighted < 0.9 * plain, (weighted, plain)


def _choices_of(plan) -> dict[str, str]:
    return {c.name: c.target.name for c in plan.choices}


@pytest.mark.oracle_c
def test_the_estimated_sensitivity_is_asked_for_and_changes_nothing_with_a_matrix(
    smollm2_f32_gguf, smollm2_reach, real_imatrix, tmp_path
):
    """`sensitivity=True` weighs a target's errors without a matrix by the sensitivity
    estimated from the weights (bundler.plan.sensitivity), which moves bytes between
    tensors; by default they weigh alike. With a matrix the flag changes nothing."""
    low, high = smollm2_reach
    target = low + (high - low) // 8
    plans = {}
    for name, extra in (
        ("estimated", {"sensitivity": True}),
        ("alike", {}),
        ("matrix", {"imatrix": real_imatrix}),
        ("matrix, flag on", {"imatrix": real_imatrix, "sensitivity": True}),
    ):
        report = quantize(
            smollm2_f32_gguf, tmp_path / "o.gguf", target_size=target, dry_run=True,
            sample_values=SAMPLE, **extra,
        )  # fmt: skip
        plans[name] = report.plan
    sources = {k: p.allocation.sensitivity for k, p in plans.items()}
    assert sources == {
        "estimated": "estimated from the weights",
        "alike": "none",
        "matrix": "importance matrix",
        "matrix, flag on": "importance matrix",
    }
    assert _choices_of(plans["estimated"]) != _choices_of(plans["alike"])
    assert _choices_of(plans["matrix"]) == _choices_of(plans["matrix, flag on"])
    assert plans["matrix"].allocation.errors == plans["matrix, flag on"].allocation.errors
