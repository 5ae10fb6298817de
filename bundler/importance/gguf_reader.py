"""The GGUF importance matrix llama-imatrix writes by default (formats/imatrix.md).

Each tensor `W` the model multiplies by has two F32 tensors: `W.in_sum2` (shape
[experts, columns]: the sum over the activations seen of their squares) and `W.counts`
(shape [experts, 1]: how many activations each expert saw), with the metadata keys
`imatrix.datasets`, `imatrix.chunk_count` and `imatrix.chunk_size`. llama-quantize's weight
of a column is `in_sum2 / count` in float32 (1 for an expert that saw nothing), with the
count first rounded to the nearest integer.

The file goes through bundler's own GGUF reader: every count, offset and size is checked
against the file before anything is read, so memory stays within the file's size.
"""

from __future__ import annotations

import math
import os

import numpy as np

from bundler.bundle import Metadata, ValueType
from bundler.containers.gguf.reader import Layout, TensorInfo, parse
from bundler.errors import FormatError
from bundler.importance.matrix import ImportanceMatrix

KEY_DATASETS = "imatrix.datasets"
KEY_CHUNK_COUNT = "imatrix.chunk_count"
KEY_CHUNK_SIZE = "imatrix.chunk_size"
SUMS, COUNTS = ".in_sum2", ".counts"


def read(path: str | os.PathLike[str]) -> ImportanceMatrix:
    """The importance matrix of the GGUF file at `path`; FormatError (or TruncatedError)
    naming the file, the offset and the problem when it is not a usable one."""
    path = os.fspath(path)
    layout = parse(path)
    if layout.skipped:
        t = layout.skipped[0]
        raise FormatError(path, t.at, f"tensor {t.name!r} has GGML type {t.ggml_type}, not F32")
    if not layout.tensors:
        raise FormatError(path, layout.infos_end, "no data: the importance matrix has no tensors")
    md = layout.metadata
    missing = [k for k in (KEY_DATASETS, KEY_CHUNK_COUNT, KEY_CHUNK_SIZE) if k not in md]
    if missing:
        raise FormatError(
            path, None,
            f"missing importance matrix metadata {', '.join(missing)} (llama-quantize "
            "refuses a GGUF matrix without all three of imatrix.datasets, "
            "imatrix.chunk_count, imatrix.chunk_size)",
        )  # fmt: skip
    pairs = _pairs(path, layout)
    entries, offsets = {}, {}
    for name, (sums, counts) in sorted(pairs.items()):
        entries[name] = _weights(path, layout, sums, counts)
        offsets[name] = sums.at
    return ImportanceMatrix(
        entries,
        datasets=_datasets(md),
        chunk_count=_u32(path, md, KEY_CHUNK_COUNT),
        chunk_size=_u32(path, md, KEY_CHUNK_SIZE),
        path=path,
        offsets=offsets,
    )


def _pairs(path: str, layout: Layout) -> dict[str, tuple[TensorInfo, TensorInfo]]:
    found: dict[str, list[TensorInfo | None]] = {}
    for t in layout.tensors:
        for slot, suffix in enumerate((SUMS, COUNTS)):
            if t.name.endswith(suffix) and len(t.name) > len(suffix):
                found.setdefault(t.name[: -len(suffix)], [None, None])[slot] = t
    pairs = {}
    for name, (sums, counts) in found.items():
        if sums is None or counts is None:
            have = sums or counts
            lacks = COUNTS if counts is None else SUMS
            raise FormatError(path, have.at, f"entry {name!r} has no {name + lacks!r} tensor")
        for t in (sums, counts):
            if t.codec is None or t.codec.name != "f32":
                raise FormatError(
                    path, t.at, f"tensor {t.name!r} is {t.codec.name.upper()}, not F32"
                )
        pairs[name] = (sums, counts)
    return pairs


def _weights(path: str, layout: Layout, sums: TensorInfo, counts: TensorInfo) -> np.ndarray:
    name = sums.name[: -len(SUMS)]
    nval, ncounts = math.prod(sums.dims), math.prod(counts.dims)
    if ncounts == 0 or nval == 0 or nval % ncounts:
        raise FormatError(
            path, sums.at,
            f"entry {name!r}: {nval:,} sums cannot be split among {ncounts:,} counts",
        )  # fmt: skip
    values = _floats(layout, sums, nval)
    seen = _floats(layout, counts, ncounts).astype(np.float64)
    # llama.cpp rounds each count half away from zero (lround), then divides in float32
    rounded = np.trunc(seen + np.copysign(0.5, seen))
    if not np.all(np.isfinite(rounded)) or np.any(np.abs(rounded) >= 2.0**63):
        raise FormatError(path, counts.at, f"entry {name!r}: a count is not a finite integer")
    per = rounded.astype(np.int64).astype(np.float32)
    rows = values.reshape(ncounts, nval // ncounts)
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        out = np.where((per > 0)[:, None], rows / per[:, None], np.float32(1.0))
    return np.ascontiguousarray(out.astype(np.float32).reshape(-1))


def _floats(layout: Layout, t: TensorInfo, n: int) -> np.ndarray:
    dtype = np.dtype(">f4" if layout.big_endian else "<f4")
    data = np.fromfile(layout.path, dtype, n, offset=layout.data_start + t.offset)
    if data.size != n:  # the file shrank after it was parsed
        raise FormatError(layout.path, layout.data_start + t.offset, f"truncated: {t.name!r}")
    return data.astype(np.float32)


def _datasets(md: Metadata) -> tuple[str, ...]:
    value = md.typed(KEY_DATASETS)
    if value.type == ValueType.ARRAY and value.item_type == ValueType.STRING:
        return tuple(value.value)
    return ()  # llama.cpp ignores a datasets key of another type


def _u32(path: str, md: Metadata, key: str) -> int:
    value = md.typed(key)
    if value.type != ValueType.UINT32:
        raise FormatError(path, None, f"{key} is {value.type.name}, not UINT32")
    return int(value.value)
