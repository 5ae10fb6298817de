"""`bundler bench coldstart`: cold and warm `quantize` runs, each a new process."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest
from conftest import run_cli

import bundler
from bundler.bench.coldstart import COLD_GOALS, TYPES, WARM_START_GOAL, child_environment


@pytest.mark.slow
def test_coldstart_reports_cold_warm_and_start_times_for_each_file_type(tmp_path):
    model = tmp_path / "model.safetensors"
    x = np.random.default_rng(5).standard_normal((128, 256)).astype(np.float32)
    bundler.save({"blk.0.ffn_down.weight": x, "blk.0.attn_norm.weight": x[0]}, model)
    # bytecode off for the bench itself; its measured processes write theirs (to the prefix)
    pyc = tmp_path / "pyc"
    env = {**os.environ, "PYTHONDONTWRITEBYTECODE": "1", "PYTHONPYCACHEPREFIX": str(pyc)}
    done = run_cli("bench", "coldstart", "--input", str(model), "--repeat", "1", "--json", env=env)
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    assert report["bytecode_setting_cleared"] is True
    assert list(pyc.rglob("bundler/cli/quantize.*.pyc"))
    assert report["source"] == str(model) and report["source_bytes"] == model.stat().st_size
    assert [r["type"] for r in report["results"]] == list(TYPES)
    for row in report["results"]:
        assert row["cold_goal_seconds"] == COLD_GOALS[row["type"]]
        assert row["warm_start_goal_seconds"] == WARM_START_GOAL
        # the cold run really compiled, and no warm run did
        assert row["cold_compiled"] is True and row["warm_compiled"] is False
        for key in ("cold", "warm", "warm_start"):
            assert row[f"{key}_seconds"] > 0 and row[f"{key}_cpu_seconds"] > 0


def test_coldstart_of_a_missing_model_exits_3_naming_it(tmp_path):
    missing = tmp_path / "nothing.safetensors"
    done = run_cli("bench", "coldstart", "--input", str(missing))
    assert done.returncode == 3
    assert str(missing) in done.stderr and "Traceback" not in done.stderr


def test_measured_processes_cache_bytecode_and_use_the_given_kernel_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("PYTHONDONTWRITEBYTECODE", "1")
    env = child_environment(tmp_path)
    assert "PYTHONDONTWRITEBYTECODE" not in env
    assert env["NUMBA_CACHE_DIR"] == str(tmp_path)
    assert env["PATH"] == os.environ["PATH"]
