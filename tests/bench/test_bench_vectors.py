"""`bundler bench vectors`: every scheme measured beside faiss and lnmp-quant's published
figures, on one core, and the process's cores given back afterwards."""

from __future__ import annotations

import argparse
import json
import os

import pytest
from conftest import run_cli

from bundler.bench import vectors as bench


def test_run_measures_every_scheme_beside_faiss_and_quotes_lnmp():
    before = os.sched_getaffinity(0)
    report = bench.run(argparse.Namespace(vectors=64, dim=512, repeat=2))
    assert os.sched_getaffinity(0) == before
    rows = {r["scheme"]: r for r in report["results"]}
    assert set(rows) == {"qint8", "qint4", "binary", "fp16"}
    assert rows["qint8"]["lnmp_published_encode_ns"] == 1170.0
    assert rows["binary"]["lnmp_published_decode_ns"] == 100.0
    for name, row in rows.items():
        assert row["encode_ns"] > 0 and row["decode_ns"] > 0
        assert row["encode_speedup_vs_lnmp"] == pytest.approx(
            row["lnmp_published_encode_ns"] / row["encode_ns"]
        )
        if name != "binary":
            assert row["faiss"].startswith("ScalarQuantizer") and row["faiss_encode_ns"] > 0
    assert "other hardware" in report["lnmp_note"]


def test_the_command_prints_json_and_a_table():
    done = run_cli("bench", "vectors", "--vectors", "32", "--repeat", "1", "--json")
    assert done.returncode == 0, done.stderr
    assert len(json.loads(done.stdout)["results"]) == 4
    human = run_cli("bench", "vectors", "--vectors", "32", "--repeat", "1")
    assert human.returncode == 0 and "other hardware" in human.stdout
