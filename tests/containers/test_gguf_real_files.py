"""Real GGUF files nobody here wrote: read, rewritten byte for byte, checked by the oracles."""

from __future__ import annotations

import gguf
import pytest
from gguf_samples import (
    assert_llama_readable,
    written_ggufs_pass_llama_rules,  # noqa: F401
)

import bundler
from bundler.containers import gguf as gguf_container
from bundler.recipe import sha256_file
from tools.reference import assets

pytestmark = pytest.mark.realfile


def _vocab_names() -> list[str]:
    try:
        return [p.name for p in assets.vocab_ggufs()]
    except assets.AssetUnavailable:
        return ["ggml-vocab-llama-spm.gguf"]  # resolved (or skipped) by the fixture


def test_smollm2_rewrite_is_byte_identical(smollm2_gguf, tmp_path):
    out = tmp_path / "smollm2.gguf"
    bundler.open(smollm2_gguf).save(out)
    assert sha256_file(out) == assets.SMOLLM2_SHA256
    assert_llama_readable(out)


def test_smollm2_reads_as_gguf_reader_lists_it(smollm2_gguf):
    bundle = bundler.open(smollm2_gguf)
    reader = gguf.GGUFReader(smollm2_gguf)
    fields = {k: f for k, f in reader.fields.items() if not k.startswith("GGUF.")}
    assert list(fields) == list(bundle.metadata)
    for key, value in bundle.metadata.typed_items():
        types = [int(t) for t in fields[key].types]
        assert types[0] == int(value.type)
        if value.item_type is not None:
            assert types[1] == int(value.item_type)
    tokens = bundle.metadata["tokenizer.ggml.tokens"]
    assert len(tokens) == 49152 and tokens == fields["tokenizer.ggml.tokens"].contents()
    assert bundle.metadata.typed("tokenizer.ggml.token_type").value.dtype == "<i4"
    codecs = [t.codec.name for t in bundle.tensors.values()]
    assert (len(codecs), codecs.count("q4_1"), codecs.count("f32"), codecs.count("q8_0")) == (
        272,
        210,
        61,
        1,
    )
    for rt, t in zip(reader.tensors, bundle.tensors.values(), strict=True):
        assert (rt.name, tuple(int(d) for d in rt.shape[::-1])) == (t.name, t.shape)
        assert int(rt.data_offset) == t.source.offset and int(rt.n_bytes) == t.nbytes


@pytest.mark.parametrize("name", _vocab_names())
def test_vocab_file_rewrite(vocab_ggufs, tmp_path, name):
    src = next(p for p in vocab_ggufs if p.name == name)
    bundle = bundler.open(src)
    out = tmp_path / name
    bundle.save(out)
    assert_llama_readable(out)
    if bundle.format_info["version"] == 3:
        assert sha256_file(out) == sha256_file(src)
    else:  # aquila is version 2: rewritten as version 3 with the same content
        assert bundle.format_info["version"] == 2
        again = bundler.open(out)
        assert again.format_info["version"] == gguf_container.WRITE_VERSION
        assert again.metadata == bundle.metadata
        assert list(again.tensors) == list(bundle.tensors)
        assert out.stat().st_size == src.stat().st_size


@pytest.mark.parametrize("window", [8, 100, 4099])
def test_string_arrays_read_the_same_through_any_copy_window(vocab_ggufs, monkeypatch, window):
    from bundler.containers.gguf import values as gguf_values

    src = next(p for p in vocab_ggufs if p.name == "ggml-vocab-llama-spm.gguf")
    expected = bundler.open(src).metadata
    monkeypatch.setattr(gguf_values, "STRING_WINDOW", window)
    assert bundler.open(src).metadata == expected
