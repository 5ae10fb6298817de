"""SafeTensors read and write, byte-identical to the reference serializer's layout, with
sharded checkpoints and the convention for bundles SafeTensors cannot hold as they are.

`read` takes a SafeTensors file, a sharded checkpoint's index JSON, or a directory (its
`model.safetensors.index.json`, else its single `.safetensors` file). A shard opened on its
own reads as the file it is: just that shard's tensors. The normative description is
formats/safetensors.md.
"""

from __future__ import annotations

from bundler.containers.safetensors import shards
from bundler.containers.safetensors.reader import read, read_file, sniff, sniff_path
from bundler.containers.safetensors.schema import NAME, PREFIX
from bundler.containers.safetensors.writer import write

EXTENSIONS = ("safetensors",)
SCHEMAS = {"prefix": PREFIX}
DEFAULT_MAX_SHARD_SIZE = shards.DEFAULT_MAX_SHARD_SIZE

__all__ = [
    "DEFAULT_MAX_SHARD_SIZE",
    "EXTENSIONS",
    "NAME",
    "SCHEMAS",
    "read",
    "read_file",
    "sniff",
    "sniff_path",
    "write",
]
