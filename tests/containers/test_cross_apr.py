"""Cross-format round trips through APR, byte-identical at the end (real files)."""

from __future__ import annotations

import hashlib
import warnings

import pytest
from apr_samples import assert_same_bundle, check_layout

from bundler.containers import apr
from bundler.errors import AprCompatibilityWarning

pytestmark = pytest.mark.realfile


def _sha256(path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _to_apr(bundle, path):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", AprCompatibilityWarning)
        apr.write(bundle, path)
    return apr.read(path)


def test_gguf_to_apr_to_gguf_is_byte_identical(smollm2_gguf, tmp_path):
    gguf = pytest.importorskip("bundler.containers.gguf")
    source = gguf.read(smollm2_gguf)
    via = _to_apr(source, tmp_path / "model.apr")
    assert_same_bundle(via, source)
    gguf.write(via, tmp_path / "back.gguf")
    assert _sha256(tmp_path / "back.gguf") == _sha256(smollm2_gguf)


def test_smollm2_as_apr_is_well_formed_and_rewrites_identically(smollm2_gguf, tmp_path):
    gguf = pytest.importorskip("bundler.containers.gguf")
    _to_apr(gguf.read(smollm2_gguf), tmp_path / "a.apr")
    _to_apr(apr.read(tmp_path / "a.apr"), tmp_path / "b.apr")
    assert _sha256(tmp_path / "a.apr") == _sha256(tmp_path / "b.apr")
    with open(tmp_path / "a.apr", "rb") as f:
        check_layout(f.read())


def test_safetensors_to_apr_to_safetensors_is_byte_identical(minilm_safetensors, tmp_path):
    st = pytest.importorskip("bundler.containers.safetensors")
    source = st.read(minilm_safetensors)
    via = _to_apr(source, tmp_path / "model.apr")
    assert_same_bundle(via, source)
    st.write(via, tmp_path / "back.safetensors")
    assert _sha256(tmp_path / "back.safetensors") == _sha256(minilm_safetensors)


def test_minilm_as_apr_is_readable_by_aprender(minilm_safetensors, tmp_path):
    st = pytest.importorskip("bundler.containers.safetensors")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        apr.write(st.read(minilm_safetensors), tmp_path / "m.apr", aprender=True)
    with open(tmp_path / "m.apr", "rb") as f:
        check_layout(f.read())
