"""`bundler bench onnx` runs every quantizer on every model and reports comparable rows."""

from __future__ import annotations

import json

import pytest
from conftest import run_cli


@pytest.mark.slow
def test_bench_onnx_compares_bundler_with_onnx_runtimes_quantizers():
    done = run_cli("bench", "onnx", "--repeat", "1", "--json")
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout)
    rows = result["rows"]
    quantizers = {r["quantizer"] for r in rows if r["model"].startswith("transformer")}
    assert quantizers == {
        "original (float)", "bundler int8 per-channel", "ORT quantize_dynamic int8 per-channel",
        "bundler int4 g32 MatMulNBits", "ORT MatMulNBitsQuantizer g32",
    }  # fmt: skip
    for r in rows:
        assert "error" not in r, r
        if r["quantizer"] != "original (float)":
            assert r["seconds"] > 0 and r["cpu_seconds"] > 0 and 0 < r["cosine"] <= 1.0000001
    four = [r for r in rows if r["model"].startswith("transformer") and r.get("bits") == "4bit"]
    assert four[0]["file_bytes"] == pytest.approx(four[1]["file_bytes"], rel=0.01)
    assert all(s["cosine_no_worse"] for s in result["speedups"])
    assert all(s["speedup_cpu"] > 0 for s in result["speedups"])
    assert len(result["load_average"]) == 3
