"""`bundler bench vectors`: every scheme measured beside faiss and lnmp-quant's published
figures, on one core, and the process's cores given back afterwards."""

from __future__ import annotations

import argparse
import json
import os

import pytest
from conftest import run_cli

from bundler.bench import vectors as bench


def test_run_measures_every_scheme_in_every_batch_beside_faiss_and_quotes_lnmp():
    before = os.sched_getaffinity(0)
    report = bench.run(argparse.Namespace(vectors=[16, 64], dim=512, repeat=2))
    assert os.sched_getaffinity(0) == before
    assert report["input"]["vectors"] == [16, 64]
    assert [(r["vectors"], r["scheme"]) for r in report["results"]] == [
        (n, s) for n in (16, 64) for s in ("qint8", "qint4", "binary", "fp16")
    ]
    rows = {r["scheme"]: r for r in report["results"] if r["vectors"] == 64}
    assert all(
        r["decode_new_output_ns"] > 0
        and r["memset_decoded_floats_ns"] > 0
        and r["max_of_input_ns"] > 0
        for r in rows.values()
    )
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
    human = run_cli("bench", "vectors", "--vectors", "8", "32", "--repeat", "1")
    assert human.returncode == 0 and "other hardware" in human.stdout
    assert "batch of 8 vectors" in human.stdout and "batch of 32 vectors" in human.stdout
