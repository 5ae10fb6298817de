"""The optional `onnx` extra: importing the `onnx` and `onnxruntime` packages, or a usage
error that names the extra to install."""

from __future__ import annotations

from types import ModuleType

from bundler.extras import require

EXTRA_HINT = "ONNX support needs the optional extra: pip install 'bundler[onnx]'"


def onnx() -> ModuleType:
    """The `onnx` package."""
    return require("onnx", f"{EXTRA_HINT} (the `onnx` package is not installed)")


def onnxruntime() -> ModuleType:
    """The `onnxruntime` package, its log silenced (errors come back as exceptions)."""
    module = require("onnxruntime", f"{EXTRA_HINT} (the `onnxruntime` package is not installed)")
    module.set_default_logger_severity(4)
    return module
