"""`bundler bench convert`: the generated models, the measured runs and the comparisons
(beside llama-quantize and beside the gguf package's path)."""

from __future__ import annotations

import json
import os

import gguf
import numpy as np
import pytest
from conftest import run_cli
from safetensors import safe_open

from bundler.bench import convert as bench
from bundler.bench import models
from bundler.cli.bench.convert import human


def test_generated_model_is_float32_weights_and_norms_of_the_asked_size(tmp_path):
    path = tmp_path / "m.safetensors"
    size = models.generate(path, 0.125)
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
    done = run_cli(
        "bench", "convert", "--against", "gguf", "--size-gib", "0.0625", "--keep", "--json",
        check=True,
    )  # fmt: skip
    r = json.loads(done.stdout)
    try:
        assert "llama_quantize" not in r
        g = r["gguf_package"]
        assert g["outputs"] == {"tensors": 3, "equal": True, "differ": []}
        for which in ("bundler", "gguf"):
            m = g[which]
            assert m["seconds"] > 0 and m["peak_rss"] > 0 and m["mib_per_s"] > 0
            assert m["cpu_seconds"] > 0
            assert m["output_bytes"] > 2 << 20
        assert g["speedup"] == g["gguf"]["seconds"] / g["bundler"]["seconds"]
        assert g["targets"]["peak_rss"] == 256 << 20
        assert sorted(os.listdir(r["directory"])) == [
            "model-f32.safetensors", "model-q4_0-bundler.gguf", "model-q4_0-gguf.gguf",
        ]  # fmt: skip
    finally:
        import shutil

        shutil.rmtree(r["directory"], ignore_errors=True)


def test_the_table_shows_both_converters_and_whether_the_targets_were_met():
    m = {"seconds": 2.0, "cpu_seconds": 3.0, "mib_per_s": 512.0, "peak_rss": 180 << 20,
         "output_bytes": 144 << 20, "pipeline_seconds": 1.0}  # fmt: skip
    gguf_package = {
        "source_bytes": bench.GIB, "bundler": m, "gguf": {**m, "seconds": 5.0},
        "speedup": 2.5, "memory_ratio": 7.0,
        "outputs": {"tensors": 33, "equal": True, "differ": []},
        "targets": {"speedup": 3.0, "speedup_met": False, "peak_rss": 256 << 20,
                    "peak_rss_met": True},
    }  # fmt: skip
    result = {"gguf_package": gguf_package, "kept": False, "threads": 2, "cpus": 2,
              "load_average": {"start": [1.0, 2.0, 3.0], "end": [1.5, 2.0, 3.0]}}  # fmt: skip
    lines = human(result).splitlines()
    assert lines[1].split() == ["converter", "time", "CPU", "throughput", "peak", "RSS", "output"]
    assert lines[3].split()[:4] == ["bundler", "quantize", "2.00", "s"]
    assert lines[4].startswith("safetensors + gguf")
    assert "speed-up 2.5x (target 3x: MISSED)" in lines[7]
    assert "under 256 MiB: met" in lines[7] and "byte-identical" in lines[8]
    assert lines[9] == (
        "load average (1, 5, 15 min) at start 1.00, 2.00, 3.00, at end 1.50, 2.00, 3.00; 2 CPU(s)"
    )


def test_the_table_puts_llama_quantize_under_bundler_with_the_verdict_on_each_row():
    def m(seconds, peak):
        return {"seconds": seconds, "cpu_seconds": seconds * 1.8, "peak_rss": peak << 20,
                "output_bytes": 100 << 20, "mib_per_s": 100.0}  # fmt: skip

    rows = [
        {"model": "llama", "type": "Q8_0", "source_bytes": 1 << 30, "bundler": m(2.0, 150),
         "llama_quantize": m(4.0, 200), "speedup": 2.0, "memory_ratio": 200 / 150,
         "goals": {"seconds_met": True, "peak_rss_met": True},
         "outputs": {"tensors": 3, "equal": True, "differ": []}},
        {"model": "llama", "type": "Q4_K_M", "source_bytes": 1 << 30, "bundler": m(5.0, 150),
         "llama_quantize": m(4.0, 100), "speedup": 0.8, "memory_ratio": 100 / 150,
         "goals": {"seconds_met": False, "peak_rss_met": False},
         "outputs": {"tensors": 3, "equal": False, "differ": ["output.weight"]}},
    ]  # fmt: skip
    result = {"llama_quantize": {"binary": "/x/llama-quantize", "warm": "warm", "rows": rows},
              "threads": 2, "cpus": 2, "kept": False,
              "load_average": {"start": [1.0, 2.0, 3.0]}}  # fmt: skip
    lines = human(result).splitlines()
    assert "/x/llama-quantize" in lines[0] and "2 thread(s) each" in lines[0]
    assert lines[3].split()[:7] == ["llama", "(1024", "MiB)", "Q8_0", "bundler", "2.00", "s"]
    assert lines[3].endswith("2.00x ok, mem 1.33x ok")
    assert lines[4].split()[:3] == ["llama-quantize", "4.00", "s"]
    assert "0.80x SLOWER, mem 0.67x HIGHER; OUTPUTS DIFFER: output.weight" in lines[5]


def _valid_gguf(path: str) -> None:
    done = run_cli("validate", path)
    assert done.returncode == 0, done.stdout + done.stderr


@pytest.fixture(scope="module")
def llama_quantize_o3():
    """The -O3 llama-quantize the benchmark measures (built by .ci/run; skipped without it
    outside CI, as the oracle tests are)."""
    from tools.reference import llama_quantize_o3

    try:
        return llama_quantize_o3.binary(build=os.environ.get("CI") == "true")
    except Exception as exc:
        if os.environ.get("CI") == "true":
            pytest.fail(f"the -O3 llama-quantize is unavailable in CI: {exc}")
        pytest.skip(f"the -O3 llama-quantize is not built: {exc}")


@pytest.mark.long  # 169 s on the AMD host
@pytest.mark.oracle_c
def test_bench_convert_beside_llama_quantize_reports_each_row_and_equal_valid_outputs(
    llama_quantize_o3,
):
    done = run_cli(
        "bench", "convert", "--against", "llama-quantize", "--models", "llama",
        "--types", "Q8_0,Q4_K_M", "--size-gib", "0.0625", "--repeat", "2", "--threads", "2",
        "--llama-quantize", str(llama_quantize_o3), "--keep", "--json", check=True,
    )  # fmt: skip
    r = json.loads(done.stdout)
    try:
        assert "gguf_package" not in r and r["threads"] == 2 and r["repeat"] == 2
        lq = r["llama_quantize"]
        assert lq["binary"] == str(llama_quantize_o3) and "warmup" in lq["warm"]
        assert [(row["model"], row["type"]) for row in lq["rows"]] == [
            ("llama", "Q8_0"), ("llama", "Q4_K_M"),
        ]  # fmt: skip
        for row in lq["rows"]:
            assert row["outputs"]["equal"] and row["outputs"]["tensors"] == 12
            for which in ("bundler", "llama_quantize"):
                m = row[which]
                assert len(m["runs_seconds"]) == len(m["runs_peak_rss"]) == 2
                assert m["seconds"] == min(m["runs_seconds"]) > 0
                assert m["peak_rss"] == max(m["runs_peak_rss"]) > 1 << 20
                assert m["cpu_seconds"] > 0 and m["output_bytes"] > 1 << 20
            assert row["speedup"] == row["llama_quantize"]["seconds"] / row["bundler"]["seconds"]
            assert row["goals"]["seconds_met"] == (row["speedup"] >= 1)
            files = [os.path.join(r["directory"], f"llama-{row['type']}-{w}.gguf")
                     for w in ("bundler", "llama")]  # fmt: skip
            for path in files:
                _valid_gguf(path)
            assert os.path.getsize(files[0]) == row["bundler"]["output_bytes"]
        assert sorted(os.listdir(r["directory"]))[0] == "llama-Q4_K_M-bundler.gguf"
    finally:
        import shutil

        shutil.rmtree(r["directory"], ignore_errors=True)


def test_the_generated_llama_model_has_the_tensors_and_keys_llama_cpp_loads(tmp_path):
    path = tmp_path / "llama.gguf"
    size = models.llama_shaped(path, 0.0625)
    reader = gguf.GGUFReader(path)
    assert size == os.path.getsize(path) and 50 << 20 < size < 70 << 20
    names = [t.name for t in reader.tensors]
    assert names[0] == "token_embd.weight" and names[-2:] == ["output_norm.weight", "output.weight"]
    blocks = {n.split(".")[2] for n in names if n.startswith("blk.0.")}
    assert blocks == {"attn_norm", "attn_q", "attn_k", "attn_v", "attn_output", "ffn_norm",
                      "ffn_gate", "ffn_up", "ffn_down"}  # fmt: skip
    assert int(reader.fields["llama.block_count"].contents()) == 1
    assert all(t.tensor_type == gguf.GGMLQuantizationType.F32 for t in reader.tensors)
    down = next(t for t in reader.tensors if t.name == "blk.0.ffn_down.weight")
    assert list(down.shape) == [models.FEED_FORWARD, models.EMBED]  # ne[0] first


@pytest.mark.parametrize(("size", "vocab", "blocks"), [(1.0, 32000, 18), (0.5, 16384, 9)])
def test_the_llama_model_grows_by_blocks_and_keeps_the_asked_size(size, vocab, blocks):
    assert models._shapes(size) == (vocab, blocks)


def test_an_unknown_comparison_is_a_usage_error():
    done = run_cli("bench", "convert", "--against", "llama-cpp")
    assert done.returncode == 2 and "llama-cpp" in done.stderr


@pytest.mark.parametrize("size", ["0", "-1", "100"])
def test_bench_convert_refuses_a_size_out_of_range(size):
    done = run_cli("bench", "convert", "--size-gib", size)
    assert done.returncode == 2 and "--size-gib" in done.stderr
