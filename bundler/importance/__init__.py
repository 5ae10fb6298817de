"""Importance matrices (llama-imatrix's output) as llama-quantize uses them: `read` a file
in either format, `load` a file or mapping with llama-quantize's entry filters, `fit` the
weights to a model's tensors, and the metadata keys a quantized model records; `measure`
one by running a GGUF model over a text in llama.cpp (`bundler[llama]`)."""

from __future__ import annotations

from bundler.importance.fit import Fit, expected_length, fit
from bundler.importance.load import ImportanceSource, load, read
from bundler.importance.matrix import (
    KEY_CHUNKS,
    KEY_DATASET,
    KEY_ENTRIES,
    KEY_FILE,
    ImportanceMatrix,
)
from bundler.importance.measure import Activations, measure

__all__ = [
    "KEY_CHUNKS",
    "KEY_DATASET",
    "KEY_ENTRIES",
    "KEY_FILE",
    "Activations",
    "Fit",
    "ImportanceMatrix",
    "ImportanceSource",
    "expected_length",
    "fit",
    "load",
    "measure",
    "read",
]
