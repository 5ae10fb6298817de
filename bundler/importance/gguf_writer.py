"""Writing measured activations as llama-imatrix's GGUF importance matrix
(formats/imatrix.md, section 1): `general.type` = `imatrix`, the three `imatrix.*` keys, and
per weight `W` the F32 tensors `W.in_sum2` (numpy shape (1, columns)) and `W.counts`
((1, 1)). llama-quantize, llama-imatrix (`--in-file`) and `bundler quantize --imatrix` read
it; the file is written to a temporary name and renamed into place."""

from __future__ import annotations

import os

import numpy as np

from bundler.bundle import Bundle, Metadata, Tensor, ValueType
from bundler.errors import OutputExistsError
from bundler.importance.gguf_reader import (
    COUNTS,
    KEY_CHUNK_COUNT,
    KEY_CHUNK_SIZE,
    KEY_DATASETS,
    SUMS,
)
from bundler.importance.measure import Activations


def write(found: Activations, path: str | os.PathLike[str], force: bool = False) -> None:
    """Write `found` to `path` as a GGUF importance matrix (refusing to overwrite without
    `force`)."""
    path = os.fspath(path)
    if not force and os.path.exists(path):
        raise OutputExistsError(path)
    md = Metadata()
    md.set("general.type", "imatrix", ValueType.STRING)
    md.set(KEY_DATASETS, [found.text], ValueType.ARRAY, ValueType.STRING)
    md.set(KEY_CHUNK_COUNT, found.chunks, ValueType.UINT32)
    md.set(KEY_CHUNK_SIZE, found.context, ValueType.UINT32)
    tensors = []
    for name, sums in sorted(found.sums.items()):
        tensors.append(Tensor.from_array(name + SUMS, sums.astype(np.float32).reshape(1, -1)))
        count = np.full((1, 1), found.counts[name], np.float32)
        tensors.append(Tensor.from_array(name + COUNTS, count))
    Bundle(md, tensors).save(path, format="gguf")
