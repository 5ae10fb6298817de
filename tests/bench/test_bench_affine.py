"""`bundler bench codecs --affine`: every affine scheme beside onnxruntime's quantizers."""

from __future__ import annotations

import json

import onnxruntime  # noqa: F401  (a test dependency: its absence fails, never skips)
from conftest import run_cli


def test_affine_bench_measures_each_codec_beside_onnxruntime_on_the_same_matrix():
    done = run_cli("bench", "codecs", "--affine", "--rows", "64", "--cols", "256",
                   "--repeat", "1", "--json", check=True)  # fmt: skip
    rows = {r["codec"]: r for r in json.loads(done.stdout)["results"]}
    assert {"int8:channel:sym:minmax", "int4:g32:asym:minmax", "q4_0", "q8_0"} <= set(rows)
    assert rows["int4:g32:sym:extreme:minmax"]["reference"] == "ort_4bit_block32_sym"
    assert rows["int4:g32:sym:minmax"]["reference"] is None  # another scale rule than ORT's
    for name in ("int8:channel:sym:minmax", "int4:g32:asym:minmax", "int4:g128:asym:minmax",
                 "int4:g32:sym:extreme:minmax"):  # fmt: skip
        r = rows[name]
        assert r["reference"].startswith("ort_") and r["reference_encode_mib_s"] > 0
        assert r["reference_encode_cpu_mib_s"] > 0 and r["speedup_cpu"] > 0
        # at equal settings the error is no higher than onnxruntime's
        assert r["ours_rmse"] <= r["reference_rmse"] * (1 + 1e-6)
    assert rows["int4:g128:asym:mse"]["vs_minmax"] > 0
    assert rows["int4:g128:asym:mse"]["vs_minmax_cpu"] > 0
    assert rows["q8_0"]["ours_encode_cpu_mib_s"] > 0
    assert rows["int8:channel:sym:minmax"]["ggml"] == "q8_0"
    assert rows["int4:g32:asym:minmax"]["vs_ggml_cpu"] > 0
    assert len(json.loads(done.stdout)["load_average"]) == 3
    assert rows["int4:g128:asym:mse"]["ours_rmse"] <= rows["int4:g128:asym:minmax"]["ours_rmse"]


def test_affine_bench_prints_a_table_for_people():
    out = run_cli("bench", "codecs", "--affine", "--rows", "32", "--cols", "128", "--repeat", "1",
                  check=True).stdout  # fmt: skip
    assert "onnxruntime" in out.splitlines()[1] and "ort_4bit_block32_asym" in out
