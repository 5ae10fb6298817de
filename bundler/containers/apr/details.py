"""What an APR file's header says beyond metadata and tensors: version and flags, and the
JSON aprender wrote (kept for a byte-identical rewrite)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from bundler.containers.apr.schema import NAME, Flags
from bundler.containers.protocol import Details


@dataclass(frozen=True)
class AprDetails(Details):
    FORMAT = NAME

    flags: int = 0
    version: tuple[int, int] = (2, 0)
    #: the metadata section as aprender wrote it (None for bundler's typed metadata)
    metadata_json: str | None = None
    #: the typed-JSON form of the metadata as read: a rewrite keeps `metadata_json` only
    #: while the metadata still equals it
    metadata_snapshot: str | None = None

    @property
    def flag_names(self) -> list[str]:
        return [
            name
            for name, bit in vars(Flags).items()
            if name.isupper() and name != "KNOWN" and self.flags & bit
        ]

    def facts(self) -> dict[str, Any]:
        major, minor = self.version
        return {"version": f"{major}.{minor}", "flags": self.flags, "flag_names": self.flag_names}

    def headline(self, size: str) -> str:
        names = "|".join(self.flag_names) or "none"
        return f"APR v{self.facts()['version']}, flags {self.flags:#06x} ({names}); {size}"
