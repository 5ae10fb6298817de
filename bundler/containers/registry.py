"""The container formats, in the order sniffing tries them: adding a format is one line here
(its package, whose `format.py` implements `bundler.containers.protocol.Format`)."""

from __future__ import annotations

import importlib
from functools import cache

from bundler.containers.protocol import MEMBERS, Format
from bundler.errors import UsageError

#: Format name -> its package.
PACKAGES = {
    "gguf": "bundler.containers.gguf",
    "safetensors": "bundler.containers.safetensors",
    "apr": "bundler.containers.apr",
    "onnx": "bundler.containers.onnx",
}


def names() -> list[str]:
    """Every format's name, in sniffing order."""
    return list(PACKAGES)


@cache
def get(name: str) -> Format:
    """The format called `name`."""
    try:
        package = PACKAGES[name]
    except KeyError:
        raise UsageError(f"unknown format {name!r}; valid formats: {', '.join(PACKAGES)}") from None
    fmt = importlib.import_module(package + ".format")
    missing = [m for m in MEMBERS if not hasattr(fmt, m)]
    if missing:
        raise TypeError(f"{package}.format lacks {', '.join(missing)} of the Format protocol")
    return fmt  # type: ignore[return-value]


def titles() -> str:
    """The formats' names as people write them: `GGUF, SafeTensors or APR`."""
    shown = [get(name).TITLE for name in PACKAGES]
    return " or ".join(filter(None, (", ".join(shown[:-1]), shown[-1])))


def all_formats() -> list[Format]:
    """Every format, in sniffing order."""
    return [get(name) for name in PACKAGES]
