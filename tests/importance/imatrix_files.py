"""Importance matrices written as llama-imatrix writes them (the `gguf` package for the GGUF
form, struct for the legacy form), for the hostile and mismatch cases a real run cannot
give: another model's matrix, wrong lengths, broken counts."""

from __future__ import annotations

import struct
from collections.abc import Mapping
from pathlib import Path

import gguf
import numpy as np


def write_gguf(
    path: Path,
    entries: Mapping[str, tuple[np.ndarray, np.ndarray]],
    datasets: tuple[str, ...] = ("calibration.txt",),
    chunk_count: int = 4,
    chunk_size: int = 128,
    metadata: bool = True,
) -> Path:
    """`entries`: name -> (sums of shape [experts, columns], counts of shape [experts])."""
    w = gguf.GGUFWriter(str(path), arch=None)
    w.add_string("general.type", "imatrix")
    if metadata:
        w.add_array("imatrix.datasets", list(datasets))
        w.add_uint32("imatrix.chunk_count", chunk_count)
        w.add_uint32("imatrix.chunk_size", chunk_size)
    for name, (sums, counts) in entries.items():
        sums = np.asarray(sums, np.float32)
        sums = sums.reshape(1, -1) if sums.ndim == 1 else sums
        w.add_tensor(f"{name}.in_sum2", sums)
        w.add_tensor(f"{name}.counts", np.asarray(counts, np.float32).reshape(-1, 1))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return path


def write_dat(
    path: Path,
    entries: Mapping[str, tuple[np.ndarray, int]],
    chunk_count: int | None = 4,
    dataset: str | None = "calibration.txt",
) -> Path:
    """`entries`: name -> (values as stored, i.e. mean squares times ncall, ncall)."""
    out = [struct.pack("<i", len(entries))]
    for name, (values, ncall) in entries.items():
        raw = name.encode()
        values = np.asarray(values, "<f4")
        out += [struct.pack("<i", len(raw)), raw, struct.pack("<ii", ncall, values.size)]
        out.append(values.tobytes())
    if chunk_count is not None:
        out.append(struct.pack("<i", chunk_count))
        if dataset is not None:
            out += [struct.pack("<i", len(dataset.encode())), dataset.encode()]
    path.write_bytes(b"".join(out))
    return path


def smollm2_like(columns: dict[str, int], seed: int = 0) -> dict:
    """Random positive sums for tensors of the given column counts, 512 activations each."""
    rng = np.random.default_rng(seed)
    return {
        name: (rng.random((1, n), dtype=np.float32) * 512, np.array([512.0]))
        for name, n in columns.items()
    }
