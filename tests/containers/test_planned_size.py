"""`planned_size`: the bytes a format's writer will write, known before any tensor is read,
equal to the sizes of the files written (single files and split sets alike)."""

from __future__ import annotations

import os

import numpy as np
import pytest

from bundler.bundle import Bundle, Metadata, Tensor
from bundler.containers import module


def _bundle() -> Bundle:
    rng = np.random.default_rng(3)
    b = Bundle(Metadata({"general.architecture": "demo", "general.name": "size check"}))
    for i, (shape, codec) in enumerate(
        [((64, 96), "q8_0"), ((3, 256), "q4_k"), ((33,), "f32"), ((5, 7), "f16"), ((2, 32), "q5_1")]
    ):
        b.add(
            Tensor.from_array(f"t{i}.weight", rng.standard_normal(shape).astype(np.float32), codec)
        )
    return b


@pytest.mark.parametrize(
    ("fmt", "options", "files"),
    [("gguf", {}, 1), ("gguf", {"split_max_tensors": 2}, 3), ("gguf", {"big_endian": True}, 1),
     ("safetensors", {}, 1), ("safetensors", {"max_shard_size": 3000}, 2)],
)  # fmt: skip
def test_planned_size_is_what_the_writer_writes(tmp_path, fmt, options, files):
    path = tmp_path / f"m.{fmt}"
    predicted = module(fmt).planned_size(_bundle(), path, **options)
    module(fmt).write(_bundle(), path, **options)
    written = [p for p in tmp_path.iterdir() if p.name.endswith(f".{fmt}")]
    assert len(written) == files  # a split set: every file counted
    assert sum(os.path.getsize(p) for p in written) == predicted


@pytest.mark.parametrize("fmt", ["gguf", "safetensors"])
def test_planned_size_refuses_unknown_options(tmp_path, fmt):
    from bundler.errors import UsageError

    with pytest.raises(UsageError, match="unknown"):
        module(fmt).planned_size(_bundle(), tmp_path / f"m.{fmt}", nonsense=1)
