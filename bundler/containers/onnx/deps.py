"""The optional `onnx` extra: importing the `onnx` and `onnxruntime` packages, or a usage
error that names the extra to install."""

from __future__ import annotations

from types import ModuleType

from bundler.errors import UsageError

EXTRA_HINT = "ONNX support needs the optional extra: pip install 'bundler[onnx]'"


def onnx() -> ModuleType:
    """The `onnx` package."""
    try:
        import onnx as module
    except ImportError:
        raise UsageError(f"{EXTRA_HINT} (the `onnx` package is not installed)") from None
    return module


def onnxruntime() -> ModuleType:
    """The `onnxruntime` package, its log silenced (errors come back as exceptions)."""
    try:
        import onnxruntime as module
    except ImportError:
        raise UsageError(f"{EXTRA_HINT} (the `onnxruntime` package is not installed)") from None
    module.set_default_logger_severity(4)
    return module
