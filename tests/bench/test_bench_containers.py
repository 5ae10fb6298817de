"""The containers benchmark's building blocks: the generated input and both rewriters."""

from __future__ import annotations

import pytest

from bundler.bench import containers as bench
from bundler.containers.gguf.rules import check_llama_rules


@pytest.fixture(scope="module")
def generated(tmp_path_factory):
    path = tmp_path_factory.mktemp("bench") / "in.gguf"
    size = bench.generate(str(path), 0.005)
    return path, size


def test_generated_input_has_the_asked_size_and_passes_llama_rules(generated):
    path, size = generated
    assert abs(size - 0.005 * bench.GIB) < bench.TENSOR_BYTES
    assert check_llama_rules(path) == []


def test_both_rewriters_give_the_input_back_byte_for_byte(generated, tmp_path):
    path, _ = generated
    for which, rewrite in bench._REWRITERS.items():
        out = tmp_path / f"{which}.gguf"
        rewrite(str(path), str(out))
        assert out.read_bytes() == path.read_bytes(), which


def test_measured_rewrite_reports_time_and_memory(generated, tmp_path):
    path, _ = generated
    got = bench._measure("bundler", str(path), str(tmp_path / "out.gguf"))
    assert set(got) == {"seconds", "tracemalloc_peak", "rss_growth"}
    assert got["seconds"] > 0 and got["tracemalloc_peak"] > 0
    assert not (tmp_path / "out.gguf").exists()
