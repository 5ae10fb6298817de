"""`bundler recipe list|run` and `python recipes/NAME.py`, run as users run them."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from conftest import run_cli

RECIPES = Path(__file__).resolve().parents[2] / "recipes"


def _recipes_dir(tmp_path: Path, value: float = 0.25) -> Path:
    directory = tmp_path / "recipes"
    directory.mkdir(exist_ok=True)
    (directory / "tiny.py").write_text(
        textwrap.dedent(
            f'''
            """A tiny recipe for the command-line tests."""


            def run(ctx):
                ctx.path("out.bin").write_bytes(ctx.rng.bytes(16))
                ctx.output("out", ctx.path("out.bin"))
                ctx.metric("value", {value!r})
                ctx.table(["what", "value"], [["value", {value!r}]])
            '''
        )
    )
    return directory


def test_list_shows_every_recipe_with_one_line_each():
    done = run_cli("recipe", "list", check=True)
    names = sorted(p.stem for p in RECIPES.glob("*.py"))
    lines = done.stdout.strip().splitlines()
    assert len(lines) == 2 + len(names)  # header and rule, then one line per recipe
    for name, line in zip(names, lines[2:], strict=True):
        assert line.startswith(name + " ") and line.rstrip().endswith(".")


def test_list_json_gives_names_summaries_and_paths():
    rows = json.loads(run_cli("recipe", "list", "--json", check=True).stdout)
    assert [r["name"] for r in rows] == sorted(p.stem for p in RECIPES.glob("*.py"))
    assert all(r["summary"] and Path(r["path"]).is_file() for r in rows)


def test_run_prints_the_report_and_a_table_of_metrics_and_exits_0_when_they_match(tmp_path):
    directory = _recipes_dir(tmp_path)
    written = run_cli("recipe", "run", "tiny", "--dir", str(directory), "--update-expected")
    assert written.returncode == 0, written.stderr
    assert (directory / "tiny.expected.json").read_bytes().startswith(b'{\n  "out.bytes": 16,')
    done = run_cli("recipe", "run", "tiny", "--dir", str(directory))
    assert done.returncode == 0, done.stderr
    assert "metric" in done.stdout and "value" in done.stdout and "2.50000e-01" in done.stdout
    assert "metrics match" in done.stdout


def test_run_exits_5_naming_each_metric_that_differs_from_the_expected_ones(tmp_path):
    directory = _recipes_dir(tmp_path)
    run_cli("recipe", "run", "tiny", "--dir", str(directory), "--update-expected", check=True)
    before = (directory / "tiny.expected.json").read_bytes()
    _recipes_dir(tmp_path, value=0.5)
    done = run_cli("recipe", "run", "tiny", "--dir", str(directory))
    assert done.returncode == 5
    assert "value: expected 2.50000e-01, got 5.00000e-01" in done.stdout
    assert "--update-expected" in done.stdout
    assert (directory / "tiny.expected.json").read_bytes() == before  # never rewritten silently


def test_run_without_expected_metrics_fails_and_says_how_to_write_them(tmp_path):
    directory = _recipes_dir(tmp_path)
    done = run_cli("recipe", "run", "tiny", "--dir", str(directory))
    assert done.returncode == 5 and "--update-expected" in done.stdout
    assert not (directory / "tiny.expected.json").exists()


def test_run_json_reports_metrics_outputs_and_the_comparison(tmp_path):
    directory = _recipes_dir(tmp_path)
    run_cli("recipe", "run", "tiny", "--dir", str(directory), "--update-expected", check=True)
    data = json.loads(run_cli("recipe", "run", "tiny", "--dir", str(directory), "--json").stdout)
    assert data["metrics"]["value"] == 0.25 and data["metrics"]["out.bytes"] == 16
    assert data["outputs"]["out"] == data["metrics"]["out.sha256"]
    assert data["expected"]["matches"] is True and data["skipped"] is None


def test_run_twice_compares_the_runs(tmp_path):
    directory = tmp_path / "recipes"
    directory.mkdir()
    (directory / "noisy.py").write_text(
        '"""Not reproducible."""\n\n\ndef run(ctx):\n'
        '    import os\n\n    ctx.metric("noise", os.urandom(4).hex())\n'
    )
    done = run_cli("recipe", "run", "noisy", "--dir", str(directory), "--twice", "--json")
    assert done.returncode == 5
    assert json.loads(done.stdout)["reproducible"] is False


def test_a_skipped_recipe_exits_0_with_its_reason(tmp_path):
    directory = tmp_path / "recipes"
    directory.mkdir()
    (directory / "skips.py").write_text(
        '"""Skips."""\n\n\ndef run(ctx):\n    ctx.skip("the model cannot be fetched")\n'
    )
    done = run_cli("recipe", "run", "skips", "--dir", str(directory))
    assert done.returncode == 0
    assert "skipped: the model cannot be fetched" in done.stdout


def test_unknown_recipe_is_a_usage_error():
    done = run_cli("recipe", "run", "no_such_recipe")
    assert done.returncode == 2 and "bundle_apr_quantized_q4" in done.stderr


def test_a_recipe_script_runs_on_its_own_and_leaves_nothing_behind(tmp_path):
    cwd, tmp_root = tmp_path / "cwd", tmp_path / "tmp"
    cwd.mkdir()
    tmp_root.mkdir()
    env = {**os.environ, "TMPDIR": str(tmp_root)}
    script = RECIPES / "bundle_apr_quantized_q4.py"
    done = subprocess.run(
        [sys.executable, str(script)], cwd=cwd, env=env, capture_output=True, text=True
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "q4_0_blocks_with_reference_half_scale" in done.stdout
    assert "metrics match" in done.stdout
    assert list(cwd.iterdir()) == [] and list(tmp_root.iterdir()) == []


@pytest.mark.parametrize("name", ["bundle_gguf_q8_0", "roundtrip_all_formats"])
def test_bundler_recipe_run_matches_the_committed_metrics_in_a_fresh_process(tmp_path, name):
    env = {**os.environ, "TMPDIR": str(tmp_path)}
    done = run_cli("recipe", "run", name, "--json", env=env, cwd=tmp_path)
    assert done.returncode == 0, done.stdout + done.stderr
    data = json.loads(done.stdout)
    assert data["expected"]["matches"] is True
    assert list(tmp_path.iterdir()) == []
