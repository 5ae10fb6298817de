"""Every recipe under recipes/: reproducible, isolated, and equal to its committed metrics.

Each recipe runs twice in-process with the working directory and the temporary-file root
moved to empty directories of the test's own; both must be empty again after each run.
"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

import pytest
from conftest import IN_CI

from bundler import recipe

RECIPES = Path(__file__).resolve().parents[2] / "recipes"
NAMES = [spec.name for spec in recipe.discover(RECIPES)]
#: The workflows the project promises (issue: "at least").
REQUIRED = {
    "bundle_apr_quantized_q4",
    "bundle_gguf_q8_0",
    "bundle_safetensors_f16",
    "convert_safetensors_to_gguf",
    "convert_gguf_to_apr",
    "roundtrip_all_formats",
    "quantization_tradeoff",
    "quantize_embeddings",
}


def _files_under(root: Path) -> list[str]:
    return sorted(p.relative_to(root).as_posix() for p in root.rglob("*"))


#: Recipes that take minutes (whole real embedding matrices searched exactly).
SLOW = {"vectors_real_embeddings"}
#: Recipes whose two runs take over a minute (66-70 s): with -m long.
LONG = {"vectors_real_embeddings", "affine_quality"}


def _marks(name: str) -> tuple:
    return (pytest.mark.slow,) * (name in SLOW) + (pytest.mark.long,) * (name in LONG)


@pytest.fixture(
    scope="module",
    params=[pytest.param(n, marks=_marks(n)) for n in NAMES],
)
def runs(request, tmp_path_factory):
    """(spec, Reproduction, files left in cwd and in the temp root after each run)."""
    spec = recipe.find(request.param, RECIPES)
    base = tmp_path_factory.mktemp(f"isolation-{spec.name}")
    cwd, tmp_root = base / "cwd", base / "tmp"
    cwd.mkdir()
    tmp_root.mkdir()
    results, leftovers = [], []
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(cwd)
        mp.setattr(tempfile, "tempdir", str(tmp_root))
        for _ in range(2):
            results.append(recipe.run_recipe(spec))
            leftovers.append(_files_under(cwd) + _files_under(tmp_root))
    if results[0].skipped is not None:
        if IN_CI:
            pytest.fail(f"recipe {spec.name} skipped in CI: {results[0].skipped}")
        pytest.skip(f"recipe {spec.name} skipped: {results[0].skipped}")
    return spec, recipe.Reproduction(*results), leftovers


def test_every_required_workflow_has_a_recipe():
    assert set(NAMES) >= REQUIRED


def test_every_recipe_has_a_summary_and_committed_expected_metrics_and_nothing_else_is_there():
    for spec in recipe.discover(RECIPES):
        assert spec.summary.endswith("."), spec.name
        assert spec.expected_path.is_file(), f"{spec.name}: no {spec.expected_path.name}"
    expected = {p.name.removesuffix(".expected.json") for p in RECIPES.glob("*.expected.json")}
    assert expected == set(NAMES), "expected metrics without a recipe"


def test_expected_metrics_files_are_canonical_json():
    for path in RECIPES.glob("*.expected.json"):
        data = json.loads(path.read_text(encoding="ascii"))
        assert recipe.canonical_json(data) == path.read_bytes(), path.name


def test_two_runs_give_identical_metrics_json_and_output_hashes(runs):
    _, repro, _ = runs
    assert repro.first.metrics_json() == repro.second.metrics_json(), repro.differences()
    assert repro.first.outputs == repro.second.outputs
    assert repro.first.outputs, "a recipe must declare at least one output file"
    assert repro.reproducible


def test_recipe_leaves_no_file_outside_its_temporary_directory(runs):
    _, _, leftovers = runs
    assert leftovers == [[], []]


def test_metrics_match_the_committed_expected_metrics(runs):
    spec, repro, _ = runs
    assert recipe.check_expected(spec, repro.first) == []


def test_output_hashes_are_among_the_metrics(runs):
    _, repro, _ = runs
    for label, digest in repro.first.outputs.items():
        assert repro.first.metrics[f"{label}.sha256"] == digest


def test_recipe_reports_something_for_people(runs):
    _, repro, _ = runs
    assert repro.first.report and all(block.strip() for block in repro.first.report)


@pytest.mark.parametrize(
    ("name", "key", "value"),
    [
        ("bundle_apr_quantized_q4", "q4_0_blocks_with_reference_half_scale", 12288),
        ("bundle_apr_quantized_q4", "apr_code", 66),
        ("bundle_gguf_q8_0", "gguf_reader_tensors", 5),
        ("bundle_safetensors_f16", "tensors_within_half_an_f16_step", 4),
        ("roundtrip_all_formats", "failures", 0),
        ("convert_safetensors_to_gguf", "round_trip_identical", True),
        ("convert_gguf_to_apr", "round_trip_identical", True),
        ("vectors_real_embeddings", "minilm.qint8_recall_at_least_faiss_sq8", True),
        ("vectors_real_embeddings", "minilm.qint4_recall_at_least_faiss_sq4", True),
        ("vectors_real_embeddings", "minilm.binary_recall_at_least_faiss_binary", True),
        ("vectors_real_embeddings", "smollm2.binary_recall_at_least_faiss_binary", True),
        ("vectors_real_embeddings", "smollm2.fp16.recall_at_10", 1.0),
    ],
)
def test_committed_metrics_state_what_each_recipe_proves(name, key, value):
    spec = recipe.find(name, RECIPES)
    assert recipe.load_expected(spec)[key] == value


def test_the_q4_recipe_stores_every_scale_as_the_reference_half():
    expected = recipe.load_expected(recipe.find("bundle_apr_quantized_q4", RECIPES))
    assert expected["q4_0_blocks_with_reference_half_scale"] == expected["q4_0_blocks"]


def test_roundtrip_recipe_covers_every_ordered_pair_of_formats():
    expected = recipe.load_expected(recipe.find("roundtrip_all_formats", RECIPES))
    pairs = [k for k in expected if k.endswith(".identical") and "_to_" in k]
    assert len(pairs) == 6 and all(expected[k] is True for k in pairs)
    assert all(expected[k] is True for k in expected if k.endswith(".same_as_direct"))


def test_tradeoff_and_embedding_recipes_cover_every_float_codec():
    tradeoff = recipe.load_expected(recipe.find("quantization_tradeoff", RECIPES))
    embeddings = recipe.load_expected(recipe.find("quantize_embeddings", RECIPES))
    codecs = {k.split(".")[0] for k in tradeoff if k.endswith(".snr_db")}
    assert {"q4_0", "q4_1", "q5_0", "q5_1", "q8_0", "q4_k", "q6_k", "f16", "bf16"} <= codecs
    assert codecs == {k.split(".")[0] for k in embeddings if k.endswith(".mean_cosine")}
    assert tradeoff["codecs"] == len(codecs)


def test_k_quant_error_falls_with_every_added_bit():
    tradeoff = recipe.load_expected(recipe.find("quantization_tradeoff", RECIPES))
    ladder = ["q2_k", "q3_k", "q4_k", "q5_k", "q6_k"]
    rmse = [tradeoff[f"{name}.rmse"] for name in ladder]
    bits = [tradeoff[f"{name}.bits_per_weight"] for name in ladder]
    assert bits == sorted(bits) and rmse == sorted(rmse, reverse=True)


@pytest.mark.parametrize("name", ["quantization_tradeoff", "bundle_apr_quantized_q4"])
def test_metrics_do_not_depend_on_the_thread_count(name):
    # the other tests run on every core; this one on a single thread
    from bundler.codecs import set_threads

    spec = recipe.find(name, RECIPES)
    set_threads(1)
    try:
        result = recipe.run_recipe(spec)
    finally:
        set_threads(None)
    assert result.metrics_json() == spec.expected_path.read_bytes()
