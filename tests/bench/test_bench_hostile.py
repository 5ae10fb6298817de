"""`bundler bench hostile`: each amplifying case is generated, opened in a fresh process and
reported with its outcome and memory per header MiB."""

from __future__ import annotations

import json

from tests.conftest import run_cli


def test_bench_hostile_reports_each_case_with_its_outcome_and_memory():
    done = run_cli(
        "bench", "hostile", "--cases", "gguf-nested-arrays,apr-long-array", "--scale", "0.02",
        "--json",
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    rows = {r["case"]: r for r in json.loads(done.stdout)["cases"]}
    assert set(rows) == {"gguf-nested-arrays", "apr-long-array"}
    assert rows["gguf-nested-arrays"]["count"] == 40_000
    for r in rows.values():
        assert r["outcome"] in ("read", "FormatError"), r
        assert r["peak_bytes"] > 0 and r["peak_mib_per_mib"] > 0
