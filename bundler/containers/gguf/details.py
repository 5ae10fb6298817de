"""What a GGUF file's header says beyond metadata and tensors: version, byte order,
alignment, the tensors left out, the split set."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from bundler.containers.gguf.schema import DEFAULT_ALIGNMENT, NAME, WRITE_VERSION
from bundler.containers.protocol import Details, Fields


@dataclass(frozen=True)
class SkippedTensor(Fields):
    """A tensor of a GGML type bundler does not know, left out of the bundle."""

    name: str
    ggml_type: int
    dims: tuple[int, ...]
    path: str


@dataclass(frozen=True)
class SplitSet(Fields):
    """The files of a split set (`<stem>-0000K-of-0000N.gguf`), first to last."""

    count: int
    paths: tuple[str, ...]


@dataclass(frozen=True)
class GgufDetails(Details):
    FORMAT = NAME

    version: int = WRITE_VERSION
    big_endian: bool = False
    alignment: int = DEFAULT_ALIGNMENT
    #: False when a file without tensors ends right after its header, unpadded
    padded_end: bool = True
    skipped_tensors: tuple[SkippedTensor, ...] = ()
    split: SplitSet | None = None

    @classmethod
    def from_mapping(cls, info: Mapping[str, Any]) -> GgufDetails:
        plain = dict(info)
        plain["skipped_tensors"] = tuple(
            s if isinstance(s, SkippedTensor) else SkippedTensor(**{**s, "dims": tuple(s["dims"])})
            for s in plain.get("skipped_tensors") or ()
        )
        split = plain.get("split")
        if isinstance(split, Mapping):
            plain["split"] = SplitSet(split["count"], tuple(split["paths"]))
        return super().from_mapping(plain)

    @property
    def byte_order(self) -> str:
        return "big-endian" if self.big_endian else "little-endian"

    def files(self) -> list[str] | None:
        return list(self.split.paths) if self.split else None

    def facts(self) -> dict[str, Any]:
        return {
            "version": self.version,
            "byte_order": self.byte_order,
            "alignment": self.alignment,
            "skipped_tensors": [
                {"name": s.name, "ggml_type": s.ggml_type, "dims": list(s.dims), "path": s.path}
                for s in self.skipped_tensors
            ],
        }

    def notes(self) -> list[str]:
        if not self.skipped_tensors:
            return []
        names = ", ".join(s.name for s in self.skipped_tensors)
        return [f"tensors of unknown GGML type, left out: {names}"]

    def headline(self, size: str) -> str:
        return f"GGUF v{self.version}, {self.byte_order}, alignment {self.alignment}; {size}"
