"""bundler: quantize tensors with the GGML block codecs and bundle them into GGUF,
SafeTensors and APR files.
"""

from __future__ import annotations

import importlib
import importlib.util

# `typing` costs 3 ms, which every command and every Ctrl-C before the command line's own
# handler would pay: type checkers read this name as typing.TYPE_CHECKING.
TYPE_CHECKING = False
if TYPE_CHECKING:
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
        PlanWarning,
        ShapeError,
        UnknownCodecError,
        UsageError,
        ValidationError,
    )
    from bundler.pipeline import Report, convert, quantize, save

#: Where each public name lives; imported on first use, so that `import bundler.cli` (and a
#: Ctrl-C while it starts) costs nothing before the command line takes over.
_LAZY = {
    **dict.fromkeys(("BatchReport", "batch", "run_config"), "bundler.batching"),
    **dict.fromkeys(("Bundle", "Metadata", "Tensor", "Value", "ValueType"), "bundler.bundle"),
    "Codec": "bundler.codecs",
    **dict.fromkeys(("AffineCodec", "calibrate"), "bundler.codecs.affine"),
    "codec": "bundler.codecs:get",
    **dict.fromkeys(
        (
            "BundlerError",
            "FileNotFound",
            "FormatError",
            "NonFiniteError",
            "OutputExistsError",
            "PlanWarning",
            "ShapeError",
            "UnknownCodecError",
            "UsageError",
            "ValidationError",
        ),
        "bundler.errors",
    ),
    **dict.fromkeys(("Report", "convert", "quantize", "save"), "bundler.pipeline"),
}

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
    "PlanWarning",
    "Report",
    "ShapeError",
    "Tensor",
    "UnknownCodecError",
    "UsageError",
    "ValidationError",
    "Value",
    "ValueType",
    "__version__",
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


def __getattr__(name: str) -> Any:
    if name == "__version__":
        return _version()
    where = _LAZY.get(name)
    if where is None:  # a subpackage used as an attribute: bundler.codecs, bundler.stats, ...
        if name.startswith("_") or importlib.util.find_spec(f"bundler.{name}") is None:
            raise AttributeError(f"module 'bundler' has no attribute {name!r}")
        return importlib.import_module(f"bundler.{name}")
    module, _, attr = where.partition(":")
    value = getattr(importlib.import_module(module), attr or name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("bundler")
    except PackageNotFoundError:
        return "0+unknown"


def encode(
    x: Any, codec: str | int | Codec, out: np.ndarray | None = None, importance: Any = None
) -> np.ndarray:
    """Encode `x` along its last axis; returns uint8 whose last axis is each row's bytes.

    The same contract as `gguf.quants.quantize(x, type)` (which returns float arrays for
    F32/F16; this always returns the bytes). `importance` (one weight per column, an
    importance-matrix row) selects ggml's weighted quantizer, as `llama-quantize --imatrix`
    does; see `Codec.encode`.
    """
    from bundler.codecs import get

    return get(codec).encode(x, out=out, importance=importance)


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
