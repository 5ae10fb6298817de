"""Container formats: detection by magic bytes (or by path, for multi-file checkpoints),
and read/write dispatch.

Each format is a package here whose `format.py` implements `protocol.Format`; `registry`
lists them.
"""

from __future__ import annotations

import os
from typing import Any

from bundler.bundle import Bundle, register_writer
from bundler.containers import registry
from bundler.containers.protocol import Details, Format
from bundler.errors import FileNotFound, FormatError, UsageError

#: Bytes a sniff check may look at.
SNIFF_BYTES = 64


def module(name: str) -> Format:
    """The format called `name` (its `format.py`)."""
    return registry.get(name)


def formats() -> list[str]:
    """Every format's name."""
    return registry.names()


def format_of(bundle: Bundle) -> Format | None:
    """The format a bundle was read from, None for a bundle built in memory."""
    return registry.get(bundle.format) if bundle.format else None


def describe(bundle: Bundle) -> Details | None:
    """The typed details of the container a bundle was read from."""
    fmt = format_of(bundle)
    return fmt.describe(bundle) if fmt is not None else None


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
    # each format's module loaded only when the ones before it did not recognize the bytes
    for name in registry.names():
        fmt = registry.get(name)
        if fmt.sniff(head):
            return fmt.NAME
    claimed = _claimed_path(path)
    if claimed:
        return claimed
    raise FormatError(path, 0, f"not a {registry.titles()} file ({_describe(head)})")


def _detect_directory(path: str) -> str:
    claimed = _claimed_path(path)
    if claimed:
        return claimed
    raise FormatError(path, None, "is a directory, not a model file")


def _claimed_path(path: str) -> str | None:
    """The format whose optional `sniff_path(path)` claims a path that has no magic bytes
    (a directory or index file of a multi-file checkpoint)."""
    for fmt in registry.all_formats():
        if fmt.sniff_path(path):
            return fmt.NAME
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
    # the format named like the extension first: the others then need not be imported
    for name in sorted(registry.names(), key=lambda name: name != ext):
        fmt = registry.get(name)
        if ext in fmt.EXTENSIONS:
            return fmt.NAME
    raise UsageError(f"cannot tell the format from {os.fspath(path)!r}; pass format= / --to")


def open_bundle(path: str | os.PathLike[str], format: str | None = None) -> Bundle:
    """Read the model file at `path` (format found by magic bytes unless given)."""
    return registry.get(format or detect(path)).read(os.fspath(path))


def open_header(path: str | os.PathLike[str]) -> Bundle:
    """The bundle of the model file at `path` from its headers and indexes only: no
    whole-file check (such as a footer checksum) is made."""
    path = os.fspath(path)
    return registry.get(detect(path)).read_header(path)


def save(
    bundle: Bundle, path: str | os.PathLike[str], format: str | None = None, **options: Any
) -> None:
    """Write `bundle` to `path` (format from the extension unless given)."""
    registry.get(format or format_for_path(path)).write(bundle, os.fspath(path), **options)


register_writer(save)
