"""The committed APR conformance files: read as described, rewritten byte for byte."""

from __future__ import annotations

import hashlib
import json
import warnings
from pathlib import Path

import numpy as np
import pytest
from apr_samples import check_layout
from format_docs import CONFORMANCE, conformance_maker

from bundler.containers import apr, typed_json
from bundler.errors import AprCompatibilityWarning

FILES = sorted((CONFORMANCE / "apr").glob("*.apr"))


def _expected(path: Path) -> dict:
    return json.loads(path.with_suffix(".json").read_text(encoding="utf-8"))


def test_every_builder_has_a_committed_file():
    assert sorted(p.stem for p in FILES) == sorted(conformance_maker("apr").BUILDERS)


@pytest.mark.parametrize("path", FILES, ids=lambda p: p.stem)
def test_conformance_file_is_unchanged(path):
    data = path.read_bytes()
    want = _expected(path)
    assert (hashlib.sha256(data).hexdigest(), len(data)) == (want["sha256"], want["size"])


@pytest.mark.parametrize("path", FILES, ids=lambda p: p.stem)
def test_conformance_file_has_the_apr_invariants(path):
    tensors = check_layout(path.read_bytes())
    assert len(tensors) == len(_expected(path)["tensors"])


@pytest.mark.parametrize("path", FILES, ids=lambda p: p.stem)
def test_conformance_file_reads_as_described(path):
    want = _expected(path)
    bundle = apr.read(path)
    data = path.read_bytes()
    assert bundle.format_info["flags"] == want["flags"]
    assert json.loads(typed_json.dumps(bundle.metadata)) == want["metadata"]
    got = [
        {
            "name": t.name,
            "shape": list(t.shape),
            "codec": t.codec.name,
            "apr_code": t.codec.facts.apr_code,
            "offset": t.source.offset - want["data_offset"],
            "size": t.nbytes,
            "sha256": hashlib.sha256(np.asarray(t.raw()).tobytes()).hexdigest(),
        }
        for t in bundle.tensors.values()
    ]
    assert got == want["tensors"]
    meta_size = int.from_bytes(data[20:24], "little")
    assert data[64 : 64 + meta_size].decode() == want["metadata_json"]


@pytest.mark.parametrize("path", FILES, ids=lambda p: p.stem)
def test_conformance_content_written_again_gives_the_same_bytes(path, tmp_path):
    out = tmp_path / path.name
    conformance_maker("apr").build(path.stem, str(out))
    assert out.read_bytes() == path.read_bytes()


@pytest.mark.parametrize("path", FILES, ids=lambda p: p.stem)
def test_conformance_file_rewrites_identically(path, tmp_path):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", AprCompatibilityWarning)
        apr.write(apr.read(path), tmp_path / path.name)
    assert (tmp_path / path.name).read_bytes() == path.read_bytes()


def test_data_order_file_stores_data_outside_name_order():
    path = CONFORMANCE / "apr" / "data_order.apr"
    names = [n for n, _, _ in check_layout(path.read_bytes())]
    assert names == ["alpha", "mid", "zeta"]
    assert list(apr.read(path).tensors) == ["zeta", "alpha", "mid"]
