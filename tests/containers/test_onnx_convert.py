"""ONNX -> SafeTensors / GGUF / APR carries every tensor bit for bit; ONNX -> ONNX with
nothing changed gives back a protobuf-equal model."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from conftest import run_cli
from onnx import numpy_helper

from bundler.containers import open_bundle
from bundler.containers.onnx import samples
from bundler.containers.onnx.graph import scopes


def _reference(path) -> dict[str, np.ndarray]:
    """Top-level initializers through numpy_helper (the sample models have no others)."""
    model = onnx.load(path)
    return {t.name: numpy_helper.to_array(t) for t in model.graph.initializer}


@pytest.fixture(scope="module", params=["cnn", "transformer"])
def sample_model(request, tmp_path_factory):
    path = tmp_path_factory.mktemp("onnx") / f"{request.param}.onnx"
    build = samples.small_cnn if request.param == "cnn" else samples.transformer_block
    onnx.save(build(seed=3), path)
    return path


@pytest.mark.parametrize("ext", ["safetensors", "gguf", "apr"])
def test_convert_carries_every_weight_bit_for_bit(ext, sample_model, tmp_path):
    out = tmp_path / f"weights.{ext}"
    run_cli("convert", str(sample_model), "-o", str(out), check=True)
    written = open_bundle(out)
    expected = _reference(sample_model)
    assert list(written.tensors) == list(expected)
    for name, array in expected.items():
        t = written.tensors[name]
        assert t.shape == array.shape and t.raw().tobytes() == array.tobytes(), name


def test_convert_onnx_to_onnx_gives_a_protobuf_equal_model(sample_model, tmp_path):
    out = tmp_path / "same.onnx"
    run_cli("convert", str(sample_model), "-o", str(out), check=True)
    assert onnx.load(out) == onnx.load(sample_model)


@pytest.mark.realfile
def test_silero_subgraph_weights_convert_to_safetensors_bit_for_bit(silero_vad_onnx, tmp_path):
    src = silero_vad_onnx["silero_vad.onnx"]
    out = tmp_path / "silero.safetensors"
    run_cli("convert", str(src), "-o", str(out), check=True)
    written = open_bundle(out)
    reference = []
    for scope in scopes(onnx.load(src).graph):
        for node in (n for n in scope.graph.node if n.op_type == "Constant"):
            reference += [numpy_helper.to_array(a.t) for a in node.attribute if a.name == "value"]
    assert len(written.tensors) == len(reference) == 341
    for t, array in zip(written.tensors.values(), reference, strict=True):
        assert t.shape == array.shape and t.raw().tobytes() == array.tobytes(), t.name
