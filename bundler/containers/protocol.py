"""What every container format provides: the `Format` protocol and the base of its typed
details.

A format is a package under `bundler/containers/` whose `format.py` defines the names of
`Format`; `bundler.containers.registry` lists the packages. `validate`, `inspect`, the
pipeline and the CLI reach a format only through these names.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Mapping
from typing import Any, ClassVar, Protocol, TypeVar

from bundler.bundle import Bundle
from bundler.problems import Problem

D = TypeVar("D", bound="Details")


@dataclasses.dataclass(frozen=True)
class Fields:
    """A frozen record whose fields can also be read by name (`record["field"]`)."""

    def __getitem__(self, key: str) -> Any:
        if key not in {f.name for f in dataclasses.fields(self)}:
            raise KeyError(key)
        return getattr(self, key)

    def get(self, key: str, default: Any = None) -> Any:
        try:
            return self[key]
        except KeyError:
            return default


@dataclasses.dataclass(frozen=True)
class Details(Fields):
    """A format's facts about the file a bundle was read from: what `inspect` shows and
    what the format's writer needs for a byte-identical rewrite. Each format subclasses it
    with its own fields (all with defaults)."""

    #: The format these details belong to.
    FORMAT: ClassVar[str] = ""

    @classmethod
    def of(cls: type[D], bundle: Bundle) -> D | None:
        """The bundle's details when it was read from (or built for) this format."""
        if bundle.format != cls.FORMAT:
            return None
        info = bundle.format_info
        if isinstance(info, cls):
            return info
        if isinstance(info, Mapping):
            return cls.from_mapping(info)
        return None

    @classmethod
    def from_mapping(cls: type[D], info: Mapping[str, Any]) -> D:
        """Details from plain data with the same field names (unknown names are ignored)."""
        names = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in info.items() if k in names})

    def files(self) -> list[str] | None:
        """Every file of a multi-file checkpoint, in order; None when the tensors' own files
        are the whole story."""
        return None

    def facts(self) -> dict[str, Any]:
        """The container facts `inspect --json` reports beside format, files and bytes."""
        return {}

    def headline(self, size: str) -> str:
        """One line for people: the format, its version and flags, then `size`."""
        return f"{self.FORMAT}; {size}"

    def notes(self) -> list[str]:
        """Lines for people about what the bundle lacks or changes from the file."""
        return []


def claims_no_path(path: str) -> bool:
    """`sniff_path` of a format whose files always start with their magic bytes."""
    return False


class Format(Protocol):
    """The entry points of one container format (the names its `format.py` defines)."""

    NAME: str
    #: The name as people write it (`GGUF`).
    TITLE: str
    #: File name endings that ask for this format when writing.
    EXTENSIONS: tuple[str, ...]
    #: The write option that caps each output file's size (None: one file only).
    SPLIT_OPTION: str | None
    #: True when a directory output is a model folder this format writes into.
    WRITES_FOLDER: bool
    #: The class of this format's typed details.
    DETAILS: type[Details]

    def sniff(self, head: bytes) -> bool:
        """True when a file's first bytes are this format's."""

    def sniff_path(self, path: str) -> bool:
        """True for a path without magic bytes that this format reads (a directory or
        index file of a multi-file checkpoint)."""

    def read(self, path: str | os.PathLike[str]) -> Bundle:
        """The bundle of a file, every check made."""

    def read_header(self, path: str) -> Bundle:
        """The bundle of a file, from its headers and indexes only (no whole-file checks)."""

    def write(self, bundle: Bundle, path: str | os.PathLike[str], **options: Any) -> None:
        """Write `bundle` to `path` in this format."""

    def describe(self, bundle: Bundle) -> Details:
        """The typed details of a bundle read in this format."""

    def check(self, bundle: Bundle, files: list[str]) -> list[Problem]:
        """Structural rules `read_header` leaves out (whole-file checksums)."""

    def check_strict(self, bundle: Bundle, files: list[str]) -> list[Problem]:
        """What this format's reference reader would refuse that bundler accepts."""


#: A format may also define `planned_size(bundle, path, **write_options) -> int`: the exact
#: bytes `write` would write, computed without reading any tensor data (what a size target
#: is checked against; bundler.plan.target).
#: The names a format module must define.
MEMBERS = (
    "NAME", "TITLE", "EXTENSIONS", "SPLIT_OPTION", "WRITES_FOLDER", "DETAILS", "sniff",
    "sniff_path", "read", "read_header", "write", "describe", "check", "check_strict",
)  # fmt: skip
