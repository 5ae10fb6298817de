"""bundler: quantize tensors with the GGML block codecs and bundle them into GGUF,
SafeTensors and APR files.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from bundler.batching import BatchReport, batch, run_config
from bundler.bundle import Bundle, Metadata, Tensor, Value, ValueType
from bundler.codecs import Codec
from bundler.codecs import get as codec
from bundler.codecs.affine import AffineCodec, calibrate
from bundler.errors import (
    BundlerError,
    FileNotFound,
    FormatError,
    NonFiniteError,
    OutputExistsError,
    ShapeError,
    UnknownCodecError,
    UsageError,
    ValidationError,
)
from bundler.pipeline import Report, convert, quantize, save

__all__ = [
    "AffineCodec",
    "BatchReport",
    "Bundle",
    "BundlerError",
    "Codec",
    "FileNotFound",
    "FormatError",
    "Metadata",
    "NonFiniteError",
    "OutputExistsError",
    "Report",
    "ShapeError",
    "Tensor",
    "UnknownCodecError",
    "UsageError",
    "ValidationError",
    "Value",
    "ValueType",
    "batch",
    "calibrate",
    "codec",
    "convert",
    "decode",
    "encode",
    "open",
    "quantize",
    "run_config",
    "save",
    "vectors",
]


def encode(x: Any, codec: str | int | Codec, out: np.ndarray | None = None) -> np.ndarray:
    """Encode `x` along its last axis; returns uint8 whose last axis is each row's bytes.

    The same contract as `gguf.quants.quantize(x, type)` (which returns float arrays for
    F32/F16; this always returns the bytes).
    """
    from bundler.codecs import get

    return get(codec).encode(x, out=out)


def decode(
    raw: Any,
    codec: str | int | Codec,
    shape: tuple[int, ...] | None = None,
    out: np.ndarray | None = None,
) -> np.ndarray:
    """Decode bytes from `encode` back to values in the logical shape (float32 for float codecs)."""
    from bundler.codecs import get

    return get(codec).decode(raw, shape=shape, out=out)


def open(path: Any, format: str | None = None) -> Bundle:
    """Read a GGUF, SafeTensors or APR file; the format is found from its magic bytes."""
    from bundler.containers import open_bundle

    return open_bundle(path, format=format)


def __getattr__(name: str) -> Any:
    # bundler.vectors loads on first use: its kernels need the compiler, `import bundler` not
    if name == "vectors":
        import importlib

        return importlib.import_module("bundler.vectors")
    raise AttributeError(f"module 'bundler' has no attribute {name!r}")
