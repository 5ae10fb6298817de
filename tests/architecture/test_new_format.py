"""Adding a format is one folder and one registry line: with the TOY format of
`toyformat/` registered, detection, conversion, inspection and validation work unchanged."""

from __future__ import annotations

import numpy as np
import pytest

import bundler
from bundler.containers import registry
from bundler.inspection import describe
from bundler.validate import validate


@pytest.fixture
def toy_registered(monkeypatch):
    monkeypatch.setitem(registry.PACKAGES, "toy", "toyformat")
    registry.get.cache_clear()
    yield
    registry.get.cache_clear()


@pytest.fixture
def source(tmp_path):
    rng = np.random.default_rng(7)
    path = tmp_path / "model.safetensors"
    weights = {"blk.0.attn_q.weight": rng.standard_normal((8, 64), dtype=np.float32),
               "blk.0.attn_norm.weight": rng.standard_normal(64, dtype=np.float32)}  # fmt: skip
    bundler.save(weights, path, {"general.architecture": "llama"})
    return path


def test_a_registered_format_is_converted_to_read_inspected_validated(
    toy_registered, source, tmp_path
):
    out = tmp_path / "model.toy"
    report = bundler.quantize(source, out, "q8_0")
    assert report.format == "toy"
    back, original = bundler.open(out), bundler.open(source)
    assert back.format == "toy" and list(back.tensors) == list(original.tensors)
    assert back.tensors["blk.0.attn_q.weight"].codec.name == "q8_0"
    norm = "blk.0.attn_norm.weight"
    assert np.array_equal(back.tensors[norm].numpy(), original.tensors[norm].numpy())
    container = describe(out)["container"]
    assert container["format"] == "toy" and container["header_size"] > 0
    assert container["summary"].startswith("TOY, header")
    assert validate(out).valid
    strict = validate(out, strict=True)
    assert [p.rule for p in strict.errors] == ["toy"]


def test_a_registered_format_cannot_be_split(toy_registered, source, tmp_path):
    with pytest.raises(bundler.UsageError, match="toy output cannot be split"):
        bundler.convert(source, tmp_path / "x.toy", split_max_size=1000)
