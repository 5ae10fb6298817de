"""The recipe context: seeds, the temporary directory, metrics, canonical JSON, reproduction."""

from __future__ import annotations

import math
import tempfile
import textwrap
from pathlib import Path

import numpy as np
import pytest

from bundler import recipe
from bundler.errors import UsageError
from bundler.stats import error_stats


def test_seed_is_the_first_eight_bytes_of_the_names_sha256_little_endian():
    assert recipe.seed_for("example") == 0x7FCC5E98E058D850


@pytest.mark.parametrize("name", ["example", "bundle_apr_quantized_q4", "ünïcode"])
def test_generator_is_seeded_from_the_name_alone(name):
    a = recipe.rng_for(name).standard_normal(8, dtype=np.float32)
    b = recipe.rng_for(name).standard_normal(8, dtype=np.float32)
    assert a.tobytes() == b.tobytes()
    assert recipe.rng_for(name + "x").standard_normal(8).tobytes() != a.tobytes()


def test_generator_stream_is_pinned():
    # PCG64 seeded with 0x7FCC5E98E058D850: a numpy that changes this stream changes every
    # recipe's expected metrics, and this test says why.
    assert recipe.rng_for("example").integers(0, 2**32, 3).tolist() == [
        1790905529,
        2934250443,
        3293718741,
    ]


def test_temporary_directory_is_fresh_and_removed_after_a_normal_run(tmp_path, monkeypatch):
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    with recipe.recipe_context("example") as ctx:
        assert ctx.workdir.parent == tmp_path and list(ctx.workdir.iterdir()) == []
        ctx.path("a", "b").parent.mkdir()
        ctx.path("a", "b").write_bytes(b"x")
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("error", [RuntimeError, KeyboardInterrupt, recipe.RecipeSkipped])
def test_temporary_directory_is_removed_whatever_ends_the_run(tmp_path, monkeypatch, error):
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    with pytest.raises(error), recipe.recipe_context("example") as ctx:
        ctx.path("partial.gguf").write_bytes(b"GGUF")
        raise error("stop")
    assert list(tmp_path.iterdir()) == []


def test_two_contexts_get_different_directories():
    with recipe.recipe_context("a") as one, recipe.recipe_context("a") as two:
        assert one.workdir != two.workdir


@pytest.mark.parametrize(
    ("value", "token"),
    [
        (1.0, "1.00000e+00"),
        (1 / 3, "3.33333e-01"),
        (-0.0, "0.00000e+00"),
        (2.5e-300, "2.50000e-300"),
        (123456.5, "1.23456e+05"),  # the binary value is exactly .5: rounds to even
        (123457.5, "1.23458e+05"),
        (math.inf, '"inf"'),
        (-math.inf, '"-inf"'),
        (math.nan, '"nan"'),
    ],
)
def test_floats_have_six_significant_digits_in_a_fixed_form(value, token):
    assert recipe.format_float(value) == token


def test_canonical_json_golden_bytes():
    metrics = {"b": 1.0, "a": 7, "c": "x\u00e9", "d": True, "e": math.inf}
    assert recipe.canonical_json(metrics) == (
        b'{\n  "a": 7,\n  "b": 1.00000e+00,\n  "c": "x\\u00e9",\n  "d": true,\n  "e": "inf"\n}\n'
    )
    assert recipe.canonical_json({}) == b"{}\n"


def test_canonical_json_does_not_depend_on_insertion_order_or_float_noise():
    a = {"x": 0.1 + 0.2, "y": 1}
    b = {"y": 1, "x": 0.3}
    assert recipe.canonical_json(a) == recipe.canonical_json(b)


def test_metrics_take_ints_floats_strings_bools_and_numpy_scalars():
    with recipe.recipe_context("example") as ctx:
        ctx.metric("count", np.int64(3))
        ctx.metric("ratio", np.float32(0.5))
        ctx.metric("codec", "q4_0")
        ctx.metric("ok", True)
        assert ctx.result.metrics == {"count": 3, "ratio": 0.5, "codec": "q4_0", "ok": True}
        assert type(ctx.result.metrics["count"]) is int


@pytest.mark.parametrize(
    ("name", "value"),
    [("list", [1, 2]), ("array", np.zeros(2)), ("none", None), ("bad name!", 1), ("", 1)],
)
def test_metric_of_another_type_or_with_a_bad_name_is_refused(name, value):
    with recipe.recipe_context("example") as ctx, pytest.raises(UsageError):
        ctx.metric(name, value)


def test_a_metric_recorded_twice_is_refused():
    with recipe.recipe_context("example") as ctx:
        ctx.metric("a", 1)
        with pytest.raises(UsageError, match="twice"):
            ctx.metric("a", 1)


def test_output_records_size_and_sha256():
    with recipe.recipe_context("example") as ctx:
        ctx.path("f.bin").write_bytes(b"abc")
        digest = ctx.output("f", ctx.path("f.bin"))
    assert digest == "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
    assert ctx.result.metrics == {"f.bytes": 3, "f.sha256": digest}
    assert ctx.result.outputs == {"f": digest}


def test_exact_error_stats_agree_with_error_stats():
    rng = np.random.default_rng(5)
    a = rng.standard_normal(10_000).astype(np.float32)
    b = (a + rng.standard_normal(10_000).astype(np.float32) * 0.01).astype(np.float32)
    exact, fast = recipe.exact_error_stats(a, b, 5000), error_stats(a, b, 5000)
    for field in ("rmse", "max_abs", "mean_abs", "cosine", "snr_db", "compression_ratio"):
        assert getattr(exact, field) == pytest.approx(getattr(fast, field), rel=1e-12)


def test_exact_error_stats_sum_exactly_where_float64_accumulation_loses_bits():
    # products 1e16, 1, -1e16: accumulated in float64 the 1 is lost (the spacing at 1e16 is
    # 2), the exact sum keeps it
    a = np.array([1e8, 1.0, -1e8], dtype=np.float32)
    b = np.array([1e8, 1.0, 1e8], dtype=np.float32)
    assert recipe.exact_error_stats(a, b).cosine == 1.0 / math.sqrt(2e16) / math.sqrt(2e16)


def _write_recipe(directory: Path, name: str, body: str, doc: str = "A test recipe.") -> None:
    code = f'"""{doc}"""\n\n\ndef run(ctx):\n' + textwrap.indent(textwrap.dedent(body), "    ")
    (directory / f"{name}.py").write_text(code)


def test_run_twice_finds_a_recipe_that_is_not_reproducible(tmp_path):
    _write_recipe(
        tmp_path,
        "clock",
        """
        import os
        ctx.metric("noise", os.urandom(8).hex())
        ctx.path("out.bin").write_bytes(os.urandom(8))
        ctx.output("out", ctx.path("out.bin"))
        """,
    )
    repro = recipe.run_twice(recipe.find("clock", tmp_path))
    assert not repro.same_metrics and not repro.same_outputs and not repro.reproducible
    assert any(line.startswith("noise:") for line in repro.differences())
    assert any(line.startswith("output out:") for line in repro.differences())


def test_run_twice_accepts_a_seeded_recipe(tmp_path):
    _write_recipe(
        tmp_path,
        "seeded",
        """
        x = ctx.rng.standard_normal(100)
        ctx.metric("mean", float(x.mean()))
        ctx.path("x.npy").write_bytes(x.tobytes())
        ctx.output("x", ctx.path("x.npy"))
        """,
    )
    repro = recipe.run_twice(recipe.find("seeded", tmp_path))
    assert repro.reproducible and repro.differences() == []


def test_a_skipped_recipe_says_why_and_records_nothing_more(tmp_path):
    _write_recipe(tmp_path, "needs_model", 'ctx.metric("a", 1)\nctx.skip("no model here")\n')
    result = recipe.run_recipe(recipe.find("needs_model", tmp_path))
    assert result.skipped == "no model here"


def test_expected_metrics_are_compared_key_by_key(tmp_path):
    _write_recipe(tmp_path, "small", 'ctx.metric("a", 1)\nctx.metric("b", 0.5)\n')
    spec = recipe.find("small", tmp_path)
    result = recipe.run_recipe(spec)
    assert "no expected metrics" in recipe.check_expected(spec, result)[0]
    recipe.write_expected(spec, result)
    assert spec.expected_path.read_bytes() == b'{\n  "a": 1,\n  "b": 5.00000e-01\n}\n'
    assert recipe.check_expected(spec, result) == []
    spec.expected_path.write_text('{\n  "a": 2,\n  "c": 1\n}\n')
    assert recipe.check_expected(spec, result) == [
        "a: expected 2, got 1",
        "b: new metric 5.00000e-01",
        "c: missing (expected 1)",
    ]


def test_discover_lists_scripts_by_name_with_their_first_docstring_line(tmp_path):
    _write_recipe(tmp_path, "b_second", "pass\n", doc="Second.\n\nMore text.")
    _write_recipe(tmp_path, "a_first", "pass\n", doc="First.")
    (tmp_path / "_helper.py").write_text("")
    specs = recipe.discover(tmp_path)
    assert [(s.name, s.summary) for s in specs] == [("a_first", "First."), ("b_second", "Second.")]
    assert specs[0].expected_path == tmp_path / "a_first.expected.json"


def test_unknown_recipe_is_a_usage_error_naming_the_known_ones(tmp_path):
    _write_recipe(tmp_path, "only", "pass\n")
    with pytest.raises(UsageError, match="known: only"):
        recipe.find("other", tmp_path)
