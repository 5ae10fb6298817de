"""GGUF, SafeTensors and APR: detection by magic bytes, and read/write dispatch.

Each format module exposes the same names: `NAME`, `EXTENSIONS`, `sniff(head: bytes) ->
bool`, `read(path) -> Bundle` and `write(bundle, path, **options)`, plus its Construct
schemas. A format whose checkpoints can be a directory or an index file also has
`sniff_path(path) -> bool`, asked when no magic bytes match.
"""

from __future__ import annotations

import importlib
import os
from types import ModuleType
from typing import Any

from bundler.bundle import Bundle
from bundler.errors import FileNotFound, FormatError, UsageError

#: Format name -> module, in the order sniffing tries them.
_MODULES = {
    "gguf": "bundler.containers.gguf",
    "apr": "bundler.containers.apr",
    "safetensors": "bundler.containers.safetensors",
}
#: Bytes a sniff check may look at.
SNIFF_BYTES = 64


def module(name: str) -> ModuleType:
    """The module of format `name`."""
    try:
        return importlib.import_module(_MODULES[name])
    except KeyError:
        raise UsageError(f"unknown format {name!r}; valid formats: {', '.join(_MODULES)}") from None


def formats() -> list[str]:
    return list(_MODULES)


def detect(path: str | os.PathLike[str]) -> str:
    """The format of the file at `path`, from its first bytes."""
    path = os.fspath(path)
    try:
        with open(path, "rb") as f:
            head = f.read(SNIFF_BYTES)
    except FileNotFoundError:
        raise FileNotFound(path) from None
    except IsADirectoryError:
        return _detect_directory(path)
    except OSError as exc:
        raise FormatError(path, None, f"cannot read: {exc.strerror or exc}") from None
    for name in _MODULES:
        if module(name).sniff(head):
            return name
    claimed = _claimed_path(path)
    if claimed:
        return claimed
    raise FormatError(path, 0, f"not a GGUF, SafeTensors or APR file ({_describe(head)})")


def _detect_directory(path: str) -> str:
    claimed = _claimed_path(path)
    if claimed:
        return claimed
    raise FormatError(path, None, "is a directory, not a model file")


def _claimed_path(path: str) -> str | None:
    """The format whose optional `sniff_path(path)` claims a path that has no magic bytes
    (a directory or index file of a multi-file checkpoint)."""
    for name in _MODULES:
        sniff_path = getattr(module(name), "sniff_path", None)
        if sniff_path is not None and sniff_path(path):
            return name
    return None


def _describe(head: bytes) -> str:
    if not head:
        return "the file is empty"
    if head.startswith(b"version https://git-lfs"):
        return "it is a git-lfs pointer: fetch the real file with `git lfs pull`"
    text = head.lstrip().lower()
    if text.startswith((b"<!doctype html", b"<html")):
        return "it is an HTML page, perhaps a download error page"
    return f"starts with {head[:8].hex(' ')}"


def format_for_path(path: str | os.PathLike[str]) -> str:
    """The format a file extension asks for."""
    ext = os.path.basename(os.fspath(path)).rsplit(".", 1)[-1].lower()
    for name in _MODULES:
        if ext in module(name).EXTENSIONS:
            return name
    raise UsageError(f"cannot tell the format from {os.fspath(path)!r}; pass format= / --to")


def open_bundle(path: str | os.PathLike[str], format: str | None = None) -> Bundle:
    """Read the model file at `path` (format found by magic bytes unless given)."""
    return module(format or detect(path)).read(os.fspath(path))


def save(
    bundle: Bundle, path: str | os.PathLike[str], format: str | None = None, **options: Any
) -> None:
    """Write `bundle` to `path` (format from the extension unless given)."""
    module(format or format_for_path(path)).write(bundle, os.fspath(path), **options)
