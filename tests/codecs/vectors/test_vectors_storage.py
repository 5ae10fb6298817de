"""Quantized collections in SafeTensors, GGUF and APR bundles: read back unchanged, and
converted between the three formats without changing a byte of codes, scales or mins."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

import bundler
from bundler import vectors
from bundler.errors import DataCorrupted

X = np.random.default_rng(2).standard_normal((50, 33)).astype(np.float32)
FORMATS = ["safetensors", "gguf", "apr"]


def _same(a, b) -> bool:
    if isinstance(a, vectors.QuantizedVectors):
        return (a.scheme, a.dim) == (b.scheme, b.dim) and all(
            x.tobytes() == y.tobytes()
            for x, y in ((a.scale, b.scale), (a.min, b.min), (a.data, b.data))
        )
    return (
        a.dim == b.dim
        and a.schemes.tobytes() == b.schemes.tobytes()
        and a.groups.keys() == b.groups.keys()
        and all(_same(a.groups[s], b.groups[s]) for s in a.groups)
        and all(a.rows[s].tobytes() == b.rows[s].tobytes() for s in a.rows)
    )


def _collections():
    mixed, _ = vectors.quantize_to_target(X, 0.99)
    return {s.value: vectors.quantize(X, s) for s in vectors.Scheme} | {"mixed": mixed}


@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize("kind", sorted(_collections()))
def test_a_collection_reads_back_from_each_format(tmp_path, fmt, kind):
    q = _collections()[kind]
    path = tmp_path / f"v.{fmt}"
    vectors.to_bundle(q, "emb").save(path)
    back = vectors.from_bundle(bundler.open(path), "emb")
    assert _same(q, back)
    assert vectors.collections(bundler.open(path)) == ["emb"]


@pytest.mark.parametrize(("src", "dst"), list(itertools.permutations(FORMATS, 2)))
def test_converting_between_formats_keeps_every_byte(tmp_path, src, dst):
    mixed, _ = vectors.quantize_to_target(X, 0.99)
    b = vectors.to_bundle(vectors.quantize(X, "qint4"), "a")
    vectors.add_to_bundle(b, "b", mixed)
    first = tmp_path / f"one.{src}"
    b.save(first)
    second = tmp_path / f"two.{dst}"
    bundler.convert(first, second)
    one, two = bundler.open(first), bundler.open(second)
    for name in ("a", "b"):
        assert _same(vectors.from_bundle(one, name), vectors.from_bundle(two, name))
    assert {k: t.raw().tobytes() for k, t in one.tensors.items()} == {
        k: t.raw().tobytes() for k, t in two.tensors.items()
    }


def test_a_missing_tensor_is_data_corrupted(tmp_path):
    b = vectors.to_bundle(vectors.quantize(X, "qint8"), "emb")
    del b.tensors["emb.scale"]
    with pytest.raises(DataCorrupted, match=r"emb\.scale"):
        vectors.from_bundle(b)
