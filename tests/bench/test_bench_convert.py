"""`bundler bench convert`: the generated model, the measured runs and the comparison."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest
from conftest import run_cli
from safetensors import safe_open

from bundler.bench import convert as bench
from bundler.cli.bench.convert import human


def test_generated_model_is_float32_weights_and_norms_of_the_asked_size(tmp_path):
    path = tmp_path / "m.safetensors"
    size = bench.generate(path, 0.125)
    assert abs(size - 0.125 * bench.GIB) < 1 << 20
    with safe_open(path, "np") as f:
        names = list(f.keys())
        weights = [n for n in names if n.endswith("ffn_up.weight")]
        assert len(weights) == 2 and len(names) == 5
        a, b = (f.get_tensor(n) for n in weights)
    assert a.dtype == np.float32 and a.shape == (bench.SIDE, bench.SIDE)
    assert np.isfinite(a).all() and not np.array_equal(a, b) and 0.005 < a.std() < 0.2


def test_measured_run_reports_the_child_peak_memory_not_the_parent(tmp_path):
    big = "import numpy as np; a = np.ones(64 << 20, np.uint8); print(int(a.sum()), sys.argv[1:])"
    got_big = bench.run_measured(big, ["x"])
    got_small = bench.run_measured("print(1)", [])
    assert got_big["stdout"].strip() == f"{64 << 20} ['x']"
    # this test process (pytest, numpy, bundler) is far bigger than a bare interpreter
    assert got_small["peak_rss"] < 32 << 20 < got_big["peak_rss"] - (48 << 20)
    assert got_small["seconds"] > 0


def test_a_failing_converter_is_a_bundler_error():
    from bundler.errors import BundlerError

    with pytest.raises(BundlerError, match="exited 3"):
        bench.run_measured("sys.exit(3)", ["a", "b"])


@pytest.mark.slow
def test_bench_convert_compares_both_converters_and_keeps_files_when_asked(tmp_path):
    done = run_cli("bench", "convert", "--size-gib", "0.0625", "--keep", "--json", check=True)
    r = json.loads(done.stdout)
    try:
        assert r["outputs"] == {"tensors": 3, "equal": True, "differ": []}
        for which in ("bundler", "gguf"):
            m = r[which]
            assert m["seconds"] > 0 and m["peak_rss"] > 0 and m["mib_per_s"] > 0
            assert m["cpu_seconds"] > 0
            assert m["output_bytes"] > 2 << 20
        assert r["speedup"] == r["gguf"]["seconds"] / r["bundler"]["seconds"]
        assert r["targets"]["peak_rss"] == 256 << 20
        assert sorted(os.listdir(r["directory"])) == [
            "model-f32.safetensors", "model-q4_0-bundler.gguf", "model-q4_0-gguf.gguf",
        ]  # fmt: skip
    finally:
        import shutil

        shutil.rmtree(r["directory"], ignore_errors=True)


def test_the_table_shows_both_converters_and_whether_the_targets_were_met():
    m = {"seconds": 2.0, "cpu_seconds": 3.0, "mib_per_s": 512.0, "peak_rss": 180 << 20,
         "output_bytes": 144 << 20, "pipeline_seconds": 1.0}  # fmt: skip
    result = {
        "source_bytes": bench.GIB, "bundler": m, "gguf": {**m, "seconds": 5.0},
        "speedup": 2.5, "memory_ratio": 7.0, "kept": False,
        "outputs": {"tensors": 33, "equal": True, "differ": []},
        "targets": {"speedup": 3.0, "speedup_met": False, "peak_rss": 256 << 20,
                    "peak_rss_met": True},
    }  # fmt: skip
    lines = human(result).splitlines()
    assert lines[1].split() == ["converter", "time", "CPU", "throughput", "peak", "RSS", "output"]
    assert lines[3].split()[:4] == ["bundler", "quantize", "2.00", "s"]
    assert lines[4].startswith("safetensors + gguf")
    assert "speed-up 2.5x (target 3x: MISSED)" in lines[7]
    assert "under 256 MiB: met" in lines[7] and "byte-identical" in lines[8]


@pytest.mark.parametrize("size", ["0", "-1", "100"])
def test_bench_convert_refuses_a_size_out_of_range(size):
    done = run_cli("bench", "convert", "--size-gib", size)
    assert done.returncode == 2 and "--size-gib" in done.stderr
