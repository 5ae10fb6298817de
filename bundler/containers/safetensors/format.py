"""SafeTensors read and write, byte-identical to the reference serializer's layout, with
sharded checkpoints and the convention for bundles SafeTensors cannot hold as they are.

`read` takes a SafeTensors file, a sharded checkpoint's index JSON, or a directory (its
`model.safetensors.index.json`, else its single `.safetensors` file). A shard opened on its
own reads as the file it is: just that shard's tensors. The normative description is
formats/safetensors.md.
"""

from __future__ import annotations

from bundler.bundle import Bundle
from bundler.containers.safetensors import shards
from bundler.containers.safetensors.checks import check as check
from bundler.containers.safetensors.checks import check_strict as check_strict
from bundler.containers.safetensors.details import SafetensorsDetails
from bundler.containers.safetensors.reader import read as read
from bundler.containers.safetensors.reader import read_file as read_file
from bundler.containers.safetensors.reader import sniff as sniff
from bundler.containers.safetensors.reader import sniff_path as sniff_path
from bundler.containers.safetensors.schema import NAME as NAME
from bundler.containers.safetensors.schema import PREFIX
from bundler.containers.safetensors.writer import planned_size as planned_size
from bundler.containers.safetensors.writer import write as write

TITLE = "SafeTensors"
EXTENSIONS = ("safetensors",)
SCHEMAS = {"prefix": PREFIX}
DEFAULT_MAX_SHARD_SIZE = shards.DEFAULT_MAX_SHARD_SIZE
SPLIT_OPTION = "max_shard_size"
WRITES_FOLDER = True
DETAILS = SafetensorsDetails


def read_header(path: str) -> Bundle:
    """The same as `read`: SafeTensors has no whole-file checks beyond its headers."""
    return read(path)


def describe(bundle: Bundle) -> SafetensorsDetails:
    """The SafeTensors details of `bundle` (a new file's defaults when it was not read from
    one)."""
    return SafetensorsDetails.of(bundle) or SafetensorsDetails()
