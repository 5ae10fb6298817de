"""Cross-format round trips through APR, byte-identical at the end (real files)."""

from __future__ import annotations

import warnings

import pytest
from apr_samples import assert_same_bundle, check_layout

from bundler.containers import apr
from bundler.errors import AprCompatibilityWarning
from bundler.recipe import sha256_file

pytestmark = pytest.mark.realfile


def _to_apr(bundle, path):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", AprCompatibilityWarning)
        apr.write(bundle, path)
    return apr.read(path)


@pytest.mark.parametrize(
    ("fmt", "model"),
    [("gguf", "smollm2_gguf"), ("safetensors", "minilm_safetensors")],
    ids=["gguf", "safetensors"],
)
def test_round_trip_through_apr_is_byte_identical(fmt, model, request, tmp_path):
    home = pytest.importorskip(f"bundler.containers.{fmt}")
    path = request.getfixturevalue(model)
    source = home.read(path)
    via = _to_apr(source, tmp_path / "model.apr")
    assert_same_bundle(via, source)
    home.write(via, tmp_path / f"back.{fmt}")
    assert sha256_file(tmp_path / f"back.{fmt}") == sha256_file(path)


def test_smollm2_as_apr_is_well_formed_and_rewrites_identically(smollm2_gguf, tmp_path):
    gguf = pytest.importorskip("bundler.containers.gguf")
    _to_apr(gguf.read(smollm2_gguf), tmp_path / "a.apr")
    _to_apr(apr.read(tmp_path / "a.apr"), tmp_path / "b.apr")
    assert sha256_file(tmp_path / "a.apr") == sha256_file(tmp_path / "b.apr")
    with open(tmp_path / "a.apr", "rb") as f:
        check_layout(f.read())


def test_minilm_as_apr_is_readable_by_aprender(minilm_safetensors, tmp_path):
    st = pytest.importorskip("bundler.containers.safetensors")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        apr.write(st.read(minilm_safetensors), tmp_path / "m.apr", aprender=True)
    with open(tmp_path / "m.apr", "rb") as f:
        check_layout(f.read())
