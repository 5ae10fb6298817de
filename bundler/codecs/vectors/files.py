"""Vectors from files (a `.npy` array or a tensor of any bundle) and collections to files
(a bundle in any format, or the wire format in a `.bvq` file)."""

from __future__ import annotations

import os
from typing import Any

import numpy as np

from bundler.codecs.vectors.adaptive import MixedVectors
from bundler.codecs.vectors.dimensions import DimensionVectors
from bundler.codecs.vectors.schemes import QuantizedVectors
from bundler.codecs.vectors.serialization import to_bytes
from bundler.codecs.vectors.storage import to_bundle
from bundler.errors import (
    FileNotFound,
    FormatError,
    InvalidDimension,
    OutputExistsError,
    UsageError,
)

#: Extension of a file holding one serialized batch (formats/vectors.md).
WIRE_EXTENSION = ".bvq"


def read_vectors(path: str | os.PathLike[str], tensor: str | None = None) -> np.ndarray:
    """The float32 (N, D) matrix in a `.npy` file, or tensor `tensor` of a bundle."""
    path = os.fspath(path)
    if not os.path.exists(path):
        raise FileNotFound(path)
    with open(path, "rb") as f:
        head = f.read(6)
    if head == b"\x93NUMPY":
        if tensor is not None:
            raise UsageError(f"{path} is a .npy array: it has no tensor names (drop --tensor)")
        try:
            x = np.load(path, mmap_mode="r", allow_pickle=False)
        except (ValueError, OSError) as exc:
            raise FormatError(path, None, f"not a readable .npy array: {exc}") from None
        return _as_vectors(x, path)
    import bundler

    bundle = bundler.open(path)
    candidates = [n for n, t in bundle.tensors.items() if len(t.shape) == 2]
    if tensor is None:
        raise UsageError(f"{path}: name the tensor with --tensor; 2-D tensors: {candidates}")
    if tensor not in bundle.tensors:
        raise UsageError(f"{path}: no tensor {tensor!r}; 2-D tensors: {candidates}")
    return _as_vectors(bundle.tensors[tensor].numpy(), f"{path}: tensor {tensor!r}")


def _as_vectors(x: Any, where: str) -> np.ndarray:
    if x.dtype.kind not in "fiu":
        raise UsageError(f"{where}: {x.dtype} values are not vectors")
    if x.ndim == 1:
        x = x[None, :]
    if x.ndim != 2 or x.shape[1] == 0:
        raise InvalidDimension(f"{where}: shape {x.shape} is not one vector or an (N, D) matrix")
    return np.ascontiguousarray(x, np.float32)


def output_format(
    path: str | os.PathLike[str], mixed: bool = False, dimension_ranges: bool = False
) -> str:
    """What a collection written to `path` is stored as ("wire" for `.bvq`, else the bundle
    format its extension names); a usage error for a path that can hold neither, checked
    before any work (`mixed`: a collection of several schemes, `dimension_ranges`: one with
    per-dimension ranges; the wire holds per-vector schemes of one kind only)."""
    path = os.fspath(path)
    if path.lower().endswith(WIRE_EXTENSION):
        if mixed:
            raise UsageError(
                "the wire format holds one scheme; write a mixed collection to a bundle"
            )
        if dimension_ranges:
            raise UsageError(
                "the wire format holds per-vector schemes; write per-dimension ranges to a bundle"
            )
        return "wire"
    from bundler.containers import format_for_path

    return format_for_path(path)


def write_collection(
    q: QuantizedVectors | MixedVectors | DimensionVectors,
    path: str | os.PathLike[str],
    name: str = "vectors",
    force: bool = False,
) -> str:
    """Write a collection to a bundle (format from the extension) or a `.bvq` wire file;
    returns the format written."""
    from bundler.atomic import atomic_output

    path = os.fspath(path)
    if os.path.exists(path) and not force:
        raise OutputExistsError(path)
    fmt = output_format(path, isinstance(q, MixedVectors), isinstance(q, DimensionVectors))
    if fmt == "wire":
        with atomic_output(path) as f:
            f.write(to_bytes(q))
    else:
        to_bundle(q, name).save(path, format=fmt)
    return fmt
