"""Plain metadata values read back the way they were given: every array as a list, whatever
its item type, in memory and after a round trip through each format; the typed value keeps
numeric arrays as numpy arrays."""

from __future__ import annotations

import numpy as np
import pytest

import bundler
from bundler.bundle import Metadata, ValueType

VALUES = {
    "ints": [1, 2, 3],
    "floats": [0.5, 1.5],
    "strings": ["a", "b"],
    "nested": [[1, 2], [3]],
    "empty": [],
}


@pytest.mark.parametrize("key", VALUES)
def test_a_list_reads_back_as_a_list_in_memory(key):
    md = Metadata(VALUES)
    assert type(md[key]) is list and md[key] == VALUES[key]
    assert md.get(key) == VALUES[key]


def test_the_typed_value_keeps_numeric_arrays_as_numpy():
    md = Metadata({"ints": [1, 2, 3]})
    typed = md.typed("ints")
    assert typed.type == ValueType.ARRAY and typed.item_type == ValueType.INT32
    assert isinstance(typed.value, np.ndarray) and typed.value.dtype == np.int32


@pytest.mark.parametrize("ext", ["gguf", "safetensors", "apr"])
def test_lists_read_back_as_lists_from_every_format(tmp_path, ext):
    path = tmp_path / f"m.{ext}"
    flat = {k: v for k, v in VALUES.items() if k != "nested"}  # llama.cpp refuses nested arrays
    bundler.save({"w": np.zeros((2, 32), np.float32)}, path, metadata=flat)
    md = bundler.open(path).metadata
    for key, value in flat.items():
        assert type(md[key]) is list and md[key] == value, key
