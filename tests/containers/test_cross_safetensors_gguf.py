"""Cross-format round trips between SafeTensors and GGUF, byte-identical at the end (real
files), with the bundle in the middle equal to the source bundle."""

from __future__ import annotations

import numpy as np
import pytest

from bundler.bundle import Bundle, Metadata, Tensor, ValueType
from bundler.containers import gguf
from bundler.containers import safetensors as stf
from bundler.recipe import sha256_file


def _assert_same_bundle(a: Bundle, b: Bundle) -> None:
    assert a.metadata == b.metadata
    assert [(t.name, t.codec, t.shape) for t in a.tensors.values()] == [
        (t.name, t.codec, t.shape) for t in b.tensors.values()
    ]
    for name, t in a.tensors.items():
        assert np.array_equal(t.raw(), b.tensors[name].raw()), name


@pytest.mark.realfile
@pytest.mark.parametrize(
    ("model", "home", "there", "codecs"),
    [
        ("minilm_safetensors", stf, gguf, {"f32", "i64"}),
        ("smollm2_gguf", gguf, stf, {"q4_1", "q8_0", "f32"}),
    ],
    ids=["safetensors_to_gguf_to_safetensors", "gguf_to_safetensors_to_gguf"],
)
def test_round_trip_through_the_other_format_is_byte_identical(
    model, home, there, codecs, request, tmp_path
):
    path = request.getfixturevalue(model)
    source = home.read(path)
    there.write(source, tmp_path / f"model.{there.NAME}")
    via = there.read(tmp_path / f"model.{there.NAME}")
    _assert_same_bundle(via, source)
    assert {t.codec.name for t in via.tensors.values()} >= codecs
    home.write(via, tmp_path / f"back.{home.NAME}")
    assert sha256_file(tmp_path / f"back.{home.NAME}") == sha256_file(path)


@pytest.mark.realfile
def test_smollm2_as_safetensors_is_read_by_the_reference(smollm2_gguf, tmp_path):
    from safetensors import safe_open

    source = gguf.read(smollm2_gguf)
    stf.write(source, tmp_path / "model.safetensors")
    with safe_open(str(tmp_path / "model.safetensors"), framework="numpy") as f:
        assert sorted(f.keys()) == sorted(source.tensors)
        md = f.metadata()
        name = next(t.name for t in source.tensors.values() if t.codec.name == "q4_1")
        stored = f.get_tensor(name)
    assert md["general.architecture"] == source.metadata["general.architecture"]
    assert stored.dtype == np.uint8
    assert stored.tobytes() == source.tensors[name].raw().tobytes()


@pytest.mark.realfile
def test_smollm2_sharded_through_safetensors_gives_the_same_gguf(smollm2_gguf, tmp_path):
    source = gguf.read(smollm2_gguf)
    stf.write(source, tmp_path, max_shard_size=20_000_000)
    assert len(list(tmp_path.glob("model-*-of-*.safetensors"))) > 2
    gguf.write(stf.read(tmp_path), tmp_path / "back.gguf")
    assert sha256_file(tmp_path / "back.gguf") == sha256_file(smollm2_gguf)


def test_typed_metadata_and_blocks_survive_safetensors_then_gguf(tmp_path):
    from gguf import GGMLQuantizationType
    from gguf.quants import quantize

    md = Metadata({"general.architecture": "llama"})
    md.set("llama.block_count", 1, ValueType.UINT32)
    md.set("tokenizer.ggml.tokens", ["a", "b"], ValueType.ARRAY, ValueType.STRING)
    x = np.linspace(-1, 1, 4 * 64, dtype=np.float32).reshape(4, 64)
    bundle = Bundle(
        md,
        [
            Tensor.from_raw("w", (4, 64), "q4_0", quantize(x, GGMLQuantizationType.Q4_0)),
            Tensor.from_array("norm", np.ones(64, np.float32)),
        ],
    )
    stf.write(bundle, tmp_path / "a.safetensors")
    gguf.write(stf.read(tmp_path / "a.safetensors"), tmp_path / "a.gguf")
    back = gguf.read(tmp_path / "a.gguf")
    stf.write(back, tmp_path / "b.safetensors")
    assert (tmp_path / "b.safetensors").read_bytes() == (tmp_path / "a.safetensors").read_bytes()
