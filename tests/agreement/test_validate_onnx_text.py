"""`bundler validate ORIGINAL QUANTIZED --text FILE --tokenizer GGUF` on ONNX language models,
run in ONNX Runtime: SmolLM2-135M (its Q4_1 file decoded to F32) as an ONNX graph built from
its weights (onnx_llama.py), against bundler's int8 per-channel and int4 ONNX quantizations
of it, over llama.cpp's docs/build.md, tokenized by the F32 GGUF's vocabulary."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
from conftest import run_cli

from bundler.agreement import compare_texts

sys.path.insert(0, str(Path(__file__).parents[1] / "containers"))
import onnx_llama

CONTEXT, CHUNKS = 128, 4
TEXT_OPTIONS = ("--ctx", str(CONTEXT), "--chunks", str(CHUNKS))


@pytest.fixture(scope="module")
def onnx_models(smollm2_f32_gguf, tmp_path_factory) -> dict[str, Path]:
    """The F32 graph and bundler's int8 (per channel) and int4 quantizations of it."""
    pytest.importorskip("onnxruntime")
    out = tmp_path_factory.mktemp("smollm2-onnx")
    models = {"f32": onnx_llama.build(smollm2_f32_gguf, out / "SmolLM2-135M.onnx")}
    for name, flags in (("int8", ("--per-channel",)), ("int4", ())):
        models[name] = out / f"SmolLM2-135M.{name}.onnx"
        run_cli(
            "quantize", str(models["f32"]), "--type", name, *flags, "-q",
            "-o", str(models[name]), check=True,
        )  # fmt: skip
    return models


@pytest.fixture(scope="module")
def results(llama_runtime, smollm2_f32_gguf, onnx_models, build_md) -> dict[str, dict]:
    """The F32 graph against itself, the F32 GGUF in llama.cpp, int8 and int4."""
    names = ["f32", "gguf", "int8", "int4"]
    found = compare_texts(
        onnx_models["f32"],
        [onnx_models["f32"], smollm2_f32_gguf, onnx_models["int8"], onnx_models["int4"]],
        build_md, context=CONTEXT, chunks=CHUNKS, tokenizer=smollm2_f32_gguf,
    )  # fmt: skip
    return {name: r.as_dict() for name, r in zip(names, found, strict=True)}


def test_identical_onnx_models_agree_exactly(results):
    same = results["f32"]
    assert same["kl_divergence_mean"] == 0 and same["top1_agreement"] == 1
    assert same["runtime"].startswith("ONNX Runtime ")
    assert same["scored_tokens"] == CHUNKS * (CONTEXT - CONTEXT // 2 - 1)


def test_the_onnx_graph_predicts_as_llama_cpp_runs_the_gguf(results):
    # the same weights in two runtimes: only float summation order differs
    cross = results["gguf"]
    assert cross["perplexity_quantized"] == pytest.approx(cross["perplexity_original"], rel=1e-3)
    assert cross["kl_divergence_mean"] < 1e-4 and cross["top1_agreement"] > 0.99


def test_int8_per_channel_stays_closer_to_the_original_than_int4(results):
    int8, int4 = results["int8"], results["int4"]
    assert 0 < int8["kl_divergence_mean"] < 0.02 < int4["kl_divergence_mean"]
    assert int8["top1_agreement"] > int4["top1_agreement"]
    assert int8["quantized_bytes"] < 0.45 * int8["original_bytes"]
    assert int4["quantized_bytes"] < int8["quantized_bytes"]


@pytest.mark.parametrize(("threshold", "code"), [("0.02", 0), ("0.001", 5)])
def test_cli_gates_the_onnx_comparison_on_mean_kl(
    llama_runtime, smollm2_f32_gguf, onnx_models, build_md, threshold, code
):
    done = run_cli(
        "validate", str(onnx_models["f32"]), str(onnx_models["int8"]), "--text", str(build_md),
        "--tokenizer", str(smollm2_f32_gguf), *TEXT_OPTIONS, "--threshold", threshold, "--json",
    )  # fmt: skip
    assert done.returncode == code, done.stderr
    report = json.loads(done.stdout)
    assert report["passed"] is (code == 0) and report["chunks"] == CHUNKS


def test_onnx_text_without_a_tokenizer_is_a_usage_error(onnx_models, build_md):
    done = run_cli(
        "validate", str(onnx_models["f32"]), str(onnx_models["int8"]), "--text", str(build_md),
        *TEXT_OPTIONS,
    )  # fmt: skip
    assert done.returncode == 2 and "Traceback" not in done.stderr
    assert "an ONNX file carries no tokenizer; pass --tokenizer FILE" in done.stderr


def test_a_tokenizer_from_a_format_without_one_is_a_usage_error(
    onnx_models, build_md, minilm_safetensors
):
    done = run_cli(
        "validate", str(onnx_models["f32"]), str(onnx_models["int8"]), "--text", str(build_md),
        "--tokenizer", str(minilm_safetensors), *TEXT_OPTIONS,
    )  # fmt: skip
    assert done.returncode == 2 and "Traceback" not in done.stderr
    assert "reads a tokenizer from a GGUF file's vocabulary, not from SafeTensors" in done.stderr


def test_an_onnx_model_that_takes_no_token_ids_is_a_usage_error(
    llama_runtime, smollm2_f32_gguf, build_md, silero_vad_onnx
):
    vad = next(iter(silero_vad_onnx.values()))
    done = run_cli(
        "validate", str(vad), str(vad), "--text", str(build_md),
        "--tokenizer", str(smollm2_f32_gguf), *TEXT_OPTIONS,
    )  # fmt: skip
    assert done.returncode == 2 and "Traceback" not in done.stderr
    assert "not a causal language model bundler can run over a text" in done.stderr


def test_tokenizer_without_text_is_a_usage_error(onnx_models, smollm2_f32_gguf):
    done = run_cli(
        "validate", str(onnx_models["f32"]), str(onnx_models["int8"]),
        "--tokenizer", str(smollm2_f32_gguf),
    )  # fmt: skip
    assert done.returncode == 2 and "go with --text" in done.stderr
