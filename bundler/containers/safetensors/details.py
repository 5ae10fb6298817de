"""What a SafeTensors file's header says beyond metadata and tensors, and how a sharded
checkpoint was cut."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from bundler.containers.protocol import Details
from bundler.containers.safetensors.schema import NAME


@dataclass(frozen=True)
class SafetensorsDetails(Details):
    FORMAT = NAME

    #: bytes of the JSON header (None for a sharded checkpoint: one per shard)
    header_size: int | None = None
    #: the header has a `__metadata__` object (kept, even empty, on rewrite)
    metadata_object: bool = False
    #: the metadata is bundler's typed-metadata convention (formats/safetensors.md)
    convention: bool = False
    #: a sharded checkpoint's shard file names, in order
    shards: tuple[str, ...] | None = None
    #: the tensor names each shard holds, in order
    shard_tensors: tuple[tuple[str, ...], ...] | None = None

    @classmethod
    def from_mapping(cls, info: Mapping[str, Any]) -> SafetensorsDetails:
        plain = dict(info)
        for key in ("shards", "shard_tensors"):
            if plain.get(key) is not None:
                plain[key] = tuple(
                    tuple(x) if isinstance(x, (list, tuple)) else x for x in plain[key]
                )
        return super().from_mapping(plain)

    def facts(self) -> dict[str, Any]:
        return {"header_size": self.header_size, "convention": self.convention}

    def headline(self, size: str) -> str:
        typed = ", bundler typed-metadata convention" if self.convention else ""
        if self.header_size is None:  # a sharded checkpoint: one header per shard
            return f"SafeTensors, sharded{typed}; {size}"
        return f"SafeTensors, header {self.header_size:,} bytes{typed}; {size}"
