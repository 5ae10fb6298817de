"""Packages of the optional extras (bundler[onnx], bundler[ray], bundler[plot], ...),
imported when a command needs them."""

from __future__ import annotations

import importlib
from types import ModuleType

from bundler.errors import UsageError


def require(module: str, missing: str) -> ModuleType:
    """`import module`, or a UsageError saying `missing` (which names the extra to install)."""
    try:
        return importlib.import_module(module)
    except ImportError:
        raise UsageError(missing) from None
