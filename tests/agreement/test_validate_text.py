"""`bundler validate ORIGINAL QUANTIZED --text FILE` and `bundler.agreement.compare_texts`:
SmolLM2-135M (its Q4_1 file decoded to F32) against bundler's Q8_0 and Q4_0 quantizations of
it, run in llama.cpp over llama.cpp's docs/build.md, 8 chunks of 256 tokens."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from conftest import env_without, run_cli

from bundler.agreement import compare_text, compare_texts
from bundler.errors import TruncatedError, UsageError

CONTEXT, CHUNKS = 256, 8
#: Between the mean KL divergence of Q8_0 and of Q4_0 on this text.
THRESHOLD = 0.01
TEXT_OPTIONS = ("--ctx", str(CONTEXT), "--chunks", str(CHUNKS))

KEYS = {
    "original", "quantized", "text", "runtime", "context", "chunks", "chunks_available",
    "text_tokens", "scored_tokens", "original_bytes", "quantized_bytes", "perplexity_original",
    "perplexity_quantized", "kl_divergence_mean", "kl_divergence_p99", "kl_divergence_max",
    "kl_divergence_percentiles", "top1_agreement", "delta_p_rms", "threshold", "passed",
}  # fmt: skip


@pytest.fixture(scope="module")
def quantized(smollm2_f32_gguf, tmp_path_factory) -> dict[str, Path]:
    """bundler's Q8_0 and Q4_0 quantizations of the F32 file."""
    out = tmp_path_factory.mktemp("smollm2-quantized")
    files = {}
    for codec in ("q8_0", "q4_0"):
        files[codec] = out / f"SmolLM2-135M.{codec}.gguf"
        run_cli(
            "quantize", str(smollm2_f32_gguf), "--type", codec, "-q", "-o", str(files[codec]),
            check=True,
        )  # fmt: skip
    return files


@pytest.fixture(scope="module")
def results(llama_runtime, smollm2_f32_gguf, quantized, build_md) -> dict[str, dict]:
    """The F32 file against itself, Q8_0 and Q4_0, the original run once per chunk."""
    names = ["f32", *quantized]
    found = compare_texts(
        smollm2_f32_gguf, [smollm2_f32_gguf, *quantized.values()], build_md,
        context=CONTEXT, chunks=CHUNKS,
    )  # fmt: skip
    return {name: r.as_dict() for name, r in zip(names, found, strict=True)}


def test_identical_models_agree_exactly(results):
    r = results["f32"]
    assert r["kl_divergence_mean"] == 0.0 and r["kl_divergence_max"] == 0.0
    assert r["top1_agreement"] == 1.0 and r["delta_p_rms"] == 0.0
    assert r["perplexity_original"] == r["perplexity_quantized"]


def test_chunks_and_scored_tokens_follow_llama_perplexity(results, build_md):
    r = results["q8_0"]
    assert r["chunks"] == CHUNKS and r["context"] == CONTEXT
    assert r["scored_tokens"] == CHUNKS * (CONTEXT - 1 - CONTEXT // 2)
    assert r["chunks_available"] == r["text_tokens"] // CONTEXT > CHUNKS
    assert r["runtime"].startswith("llama.cpp (llama-cpp-python 0.3.36)")


def test_q8_0_is_closer_to_the_original_than_q4_0(results):
    q8, q4 = results["q8_0"], results["q4_0"]
    assert 0 < q8["kl_divergence_mean"] < THRESHOLD < q4["kl_divergence_mean"]
    assert q8["kl_divergence_p99"] < q4["kl_divergence_p99"]
    assert q8["top1_agreement"] > q4["top1_agreement"]
    base = q8["perplexity_original"]
    assert base == q4["perplexity_original"] == results["f32"]["perplexity_original"]
    assert abs(q8["perplexity_quantized"] - base) < abs(q4["perplexity_quantized"] - base)
    for r in (q8, q4):
        assert r["kl_divergence_mean"] <= r["kl_divergence_p99"] <= r["kl_divergence_max"]


@pytest.mark.parametrize(("codec", "code"), [("q8_0", 0), ("q4_0", 5)])
def test_threshold_gates_on_mean_kl_divergence_and_json_matches_the_library(
    results, smollm2_f32_gguf, quantized, build_md, codec, code
):
    done = run_cli(
        "validate", str(smollm2_f32_gguf), str(quantized[codec]), "--text", str(build_md),
        *TEXT_OPTIONS, "--threshold", str(THRESHOLD), "--json",
    )  # fmt: skip
    assert done.returncode == code, done.stderr
    report = json.loads(done.stdout)
    assert set(report) == KEYS
    assert report["passed"] is (code == 0) and report["threshold"] == THRESHOLD
    same = {k: v for k, v in results[codec].items() if k not in ("threshold", "passed")}
    assert {k: report[k] for k in same} == same  # llama.cpp runs are repeatable
    assert done.stderr == ""  # no progress bar off a terminal, no llama.cpp log


def test_human_report_names_the_figures(llama_runtime, smollm2_f32_gguf, quantized, build_md):
    done = run_cli(
        "validate", str(smollm2_f32_gguf), str(quantized["q4_0"]), "--text", str(build_md),
        "--ctx", "64", "--chunks", "1", "--threshold", "100",
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    out = done.stdout
    assert "1 of " in out and "chunks of 64 tokens" in out and "31 tokens scored" in out
    for words in ("perplexity", "KL divergence: mean", "99%", "top-1 agreement", "PASSED"):
        assert words in out


def test_without_the_llama_extra_it_is_a_usage_error_naming_it(
    smollm2_f32_gguf, build_md, tmp_path
):
    env = env_without(tmp_path, "llama_cpp")
    model = str(smollm2_f32_gguf)
    done = run_cli("validate", model, model, "--text", str(build_md), env=env)
    assert done.returncode == 2, done.stderr
    assert "pip install 'bundler[llama]'" in done.stderr and "Traceback" not in done.stderr


def test_a_truncated_gguf_is_a_typed_error_naming_the_file(
    llama_runtime, smollm2_f32_gguf, quantized, build_md, tmp_path
):
    cut = tmp_path / "cut.gguf"
    with open(quantized["q8_0"], "rb") as src, open(cut, "wb") as dst:
        dst.write(src.read(os.path.getsize(quantized["q8_0"]) // 2))
    with pytest.raises(TruncatedError) as caught:
        compare_text(smollm2_f32_gguf, cut, build_md, context=CONTEXT, chunks=1)
    assert caught.value.path == str(cut)
    done = run_cli("validate", str(smollm2_f32_gguf), str(cut), "--text", str(build_md))
    assert done.returncode == 4 and str(cut) in done.stderr and "truncated" in done.stderr
    assert "Traceback" not in done.stderr


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("--ctx", "256"), "go with --text"),
        (("--text", "TEXT"), "compares two models"),
        (("QUANT", "--text", "TEXT", "--input-shape", "x=1"), "do(es) not apply with --text"),
        (("QUANT", "--text", "TEXT", "--threshold", "-1"), "threshold must be a number >= 0"),
        (("QUANT", "--text", "NOWHERE"), "no such file"),
    ],
)
def test_usage_errors(smollm2_f32_gguf, build_md, args, message):
    table = {"TEXT": str(build_md), "QUANT": str(smollm2_f32_gguf), "NOWHERE": "/nowhere.txt"}
    done = run_cli("validate", str(smollm2_f32_gguf), *(table.get(a, a) for a in args))
    assert done.returncode in (2, 3), done.stderr
    assert message in done.stderr and "Traceback" not in done.stderr


def test_a_text_shorter_than_one_chunk_is_a_usage_error(llama_runtime, smollm2_f32_gguf, tmp_path):
    short = tmp_path / "short.txt"
    short.write_text("Only a few words here.\n")
    with pytest.raises(UsageError, match="fewer than one chunk of 256"):
        compare_text(smollm2_f32_gguf, smollm2_f32_gguf, short, context=256)


def test_models_that_tokenize_the_text_differently_are_refused(
    llama_runtime, smollm2_f32_gguf, quantized, build_md, tmp_path
):
    """The same weights with a vocabulary that adds a beginning-of-sequence token."""
    import bundler

    bundle = bundler.open(quantized["q4_0"])
    assert bundle.metadata["tokenizer.ggml.add_bos_token"] is False
    bundle.metadata["tokenizer.ggml.add_bos_token"] = True
    with_bos = tmp_path / "with-bos.gguf"
    bundle.save(with_bos)
    with pytest.raises(UsageError, match="tokenize the text differently"):
        compare_text(smollm2_f32_gguf, with_bos, build_md, context=CONTEXT, chunks=1)
