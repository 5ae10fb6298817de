"""The reference builds' shared cmake run: which tools share a tree, and how a built
executable is put into the cache (no cmake run: those are the CI's reference builds)."""

from __future__ import annotations

import os

import pytest

from tools.reference import cmake_build, llama_imatrix, llama_perplexity


def test_llama_imatrix_builds_llama_perplexity_in_its_tree_with_the_same_options():
    companions = llama_imatrix.TOOL.companions()
    assert companions == (llama_perplexity.TOOL,)
    assert companions[0].options == llama_imatrix.TOOL.options
    assert llama_perplexity.TOOL.cached_path() == (
        llama_perplexity.TOOL.build_dir() / "llama-perplexity"
    )


def test_a_companion_built_with_other_options_is_refused_before_cmake_runs(tmp_path):
    other = cmake_build.LlamaTool("llama-other", "t", ("-DX=1",), (), "tools.reference.x")
    tool = cmake_build.LlamaTool(
        "llama-tool", "t", ("-DX=2",), (), "tools.reference.y", companions=lambda: (other,)
    )
    with pytest.raises(cmake_build.BuildFailed, match="llama-other is not built with"):
        tool._build(tmp_path / "llama-tool")
    assert list(tmp_path.iterdir()) == []


def test_the_built_file_is_copied_from_anywhere_in_the_tree_executable_and_whole(tmp_path):
    tree = tmp_path / "build" / "bin"
    tree.mkdir(parents=True)
    (tree / "llama-tool").write_bytes(b"\x7fELF built")
    cache = tmp_path / "cache"
    cache.mkdir()
    cmake_build.place_built(tmp_path / "build", cache / "llama-tool")
    assert (cache / "llama-tool").read_bytes() == b"\x7fELF built"
    assert os.access(cache / "llama-tool", os.X_OK)
    assert sorted(p.name for p in cache.iterdir()) == ["llama-tool"]  # no .part left


def test_a_tree_without_the_executable_is_a_build_failure(tmp_path):
    (tmp_path / "build").mkdir()
    with pytest.raises(cmake_build.BuildFailed, match="no llama-tool under"):
        cmake_build.place_built(tmp_path / "build", tmp_path / "llama-tool")
    assert not (tmp_path / "llama-tool").exists()
