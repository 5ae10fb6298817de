"""Kernel compilation a user can see and do ahead: `bundler warmup` and the notice on
stderr when a command compiles, each in a new process with its own empty kernel cache."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import gguf
import numpy as np
import pytest
from conftest import run_cli

import bundler

#: A cheap codec to compile (a few seconds), and its file type.
CODEC, FILE_TYPE = "q8_0", "Q8_0"


def _env(cache) -> dict[str, str]:
    return {**os.environ, "NUMBA_CACHE_DIR": str(cache)}


def _notice(codec: str, cache) -> str:
    return f"bundler: compiling the {codec} encoder kernels once, cached in {cache}"


@pytest.fixture
def small_model(tmp_path):
    path = tmp_path / "small.safetensors"
    x = np.random.default_rng(3).standard_normal((64, 256)).astype(np.float32)
    bundler.save({"blk.0.ffn_down.weight": x}, path)
    return path


def test_warmup_compiles_into_an_empty_cache_then_finds_it_filled(tmp_path):
    cache = tmp_path / "kernels"
    first = run_cli("warmup", "--codecs", CODEC, "--json", env=_env(cache), check=True)
    report = json.loads(first.stdout)
    assert [r["codec"] for r in report["codecs"]] == [CODEC]
    assert report["codecs"][0]["compiled_functions"] > 0
    assert report["compiled_functions"] == report["codecs"][0]["compiled_functions"]
    assert report["cache_dirs"] and all(d.startswith(str(cache)) for d in report["cache_dirs"])
    assert first.stderr.startswith(_notice(CODEC, cache))
    assert "bundler warmup" not in first.stderr  # no hint to run what is running
    again = run_cli("warmup", "--codecs", CODEC, "--json", env=_env(cache), check=True)
    assert json.loads(again.stdout)["codecs"][0]["compiled_functions"] == 0
    assert "compiling" not in again.stderr


def test_warmup_prints_a_table_for_people(tmp_path):
    done = run_cli("warmup", "--codecs", CODEC, env=_env(tmp_path), check=True)
    lines = done.stdout.splitlines()
    assert lines[0].split() == ["codec", "compiled", "seconds"]
    assert lines[2].split()[0] == CODEC
    assert "1 codec(s) ready" in done.stdout


def test_a_warmed_cache_makes_the_first_conversion_compile_nothing(tmp_path, small_model):
    cache = tmp_path / "kernels"
    run_cli("warmup", "--codecs", CODEC, env=_env(cache), check=True)
    out = tmp_path / "out.gguf"
    done = run_cli(
        "quantize", str(small_model), "-o", str(out), "--type", FILE_TYPE, env=_env(cache)
    )
    assert done.returncode == 0, done.stderr
    assert "compiling" not in done.stderr


def test_the_first_conversion_says_on_stderr_that_it_compiles_and_where(tmp_path, small_model):
    cache = tmp_path / "kernels"
    out = tmp_path / "out.gguf"
    args = ("quantize", str(small_model), "-o", str(out), "--type", FILE_TYPE, "--force")
    first = run_cli(*args, env=_env(cache), check=True)
    notices = [line for line in first.stderr.splitlines() if "compiling" in line]
    assert len(notices) == 1 and notices[0].startswith(_notice(CODEC, cache))
    assert notices[0].endswith(" (`bundler warmup` compiles them ahead)")
    assert "compiling" not in run_cli(*args, env=_env(cache), check=True).stderr


@pytest.mark.parametrize(
    ("codecs", "says"),
    [
        ("q9_9", "unknown codec"),
        ("f4", "can be stored and copied but not encoded"),
        ("int8", "warm up its family (affine, vectors, stats, floats, gguf)"),
    ],
)
def test_warmup_of_a_codec_without_kernels_is_a_usage_error(tmp_path, codecs, says):
    done = run_cli("warmup", "--codecs", codecs, env=_env(tmp_path))
    assert done.returncode == 2
    assert says in done.stderr and "Traceback" not in done.stderr


@pytest.mark.long  # 74 s: compiles the whole affine family twice; the weighted test below
# pins the same messages and warmup for a block codec in the default run
def test_an_affine_quantize_says_it_compiles_then_warmup_of_its_family_leaves_nothing_to_do(
    tmp_path, small_model
):
    cache = tmp_path / "kernels"
    args = ["quantize", str(small_model), "--type", "int4", "--group-size", "32", "--asym"]
    cold = run_cli(*args, "-o", str(tmp_path / "a.safetensors"), env=_env(cache), check=True)
    assert "bundler: compiling the affine kernels once, cached in " + str(cache) in cold.stderr
    assert cold.stderr.count("compiling the affine kernels") == 1  # one line, not per function
    fresh = tmp_path / "fresh"
    run_cli("warmup", "--codecs", "affine", env=_env(fresh), check=True)
    warm = run_cli(*args, "-o", str(tmp_path / "b.safetensors"), env=_env(fresh), check=True)
    assert "compiling" not in warm.stderr


@pytest.mark.slow
def test_a_first_weighted_encode_says_it_compiles_and_warmup_compiles_it_ahead(tmp_path):
    weighted = (
        "import numpy as np, bundler; x = np.ones((2, 64), np.float32); bundler.encode(x, 'q4_0');"
        " bundler.encode(x, 'q4_0', importance=np.arange(64.0))"
    )
    cold = subprocess.run(
        [sys.executable, "-c", weighted], capture_output=True, text=True, env=_env(tmp_path / "a")
    )
    assert cold.returncode == 0, cold.stderr
    assert "bundler: compiling the q4_0 weighted encoder kernels once" in cold.stderr
    fresh = tmp_path / "b"
    report = run_cli("warmup", "--codecs", "q4_0", "--json", env=_env(fresh), check=True)
    assert json.loads(report.stdout)["codecs"][0]["compiled_functions"] > 0
    warm = subprocess.run(
        [sys.executable, "-c", weighted], capture_output=True, text=True, env=_env(fresh)
    )
    assert warm.returncode == 0 and "compiling" not in warm.stderr, warm.stderr


@pytest.fixture
def vocab_gguf(tmp_path):
    """A GGUF with a vocabulary long enough to be read and written by the compiled loops."""
    path = tmp_path / "vocab.gguf"
    writer = gguf.GGUFWriter(str(path), "llama")
    writer.add_array("tokenizer.ggml.tokens", [f"tok{i}" for i in range(200)])
    writer.add_tensor("w", np.ones((4, 32), np.float32))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path


def test_a_vocabulary_says_its_loops_compile_once_and_warmup_compiles_them_ahead(
    tmp_path, vocab_gguf
):
    args = ("quantize", str(vocab_gguf), "-o", str(tmp_path / "out.gguf"), "--type", "F16",
            "--force")  # fmt: skip
    cold_cache = tmp_path / "cold"
    cold = run_cli(*args, env=_env(cold_cache), check=True)
    notices = [line for line in cold.stderr.splitlines() if "GGUF string scan" in line]
    assert len(notices) == 1
    assert notices[0].startswith(
        f"bundler: compiling the GGUF string scan kernels once, cached in {cold_cache}"
    )
    assert notices[0].endswith(" (`bundler warmup` compiles them ahead)")
    warm_cache = tmp_path / "warm"
    run_cli("warmup", "--codecs", "gguf", env=_env(warm_cache), check=True)
    warm = run_cli(*args, env=_env(warm_cache), check=True)
    assert "GGUF string scan" not in warm.stderr
    # and the vocabulary went through them unchanged
    tokens = gguf.GGUFReader(str(tmp_path / "out.gguf")).fields["tokenizer.ggml.tokens"]
    assert [bytes(tokens.parts[i]).decode() for i in tokens.data] == [f"tok{i}" for i in range(200)]
