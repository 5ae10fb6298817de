"""Sharded SafeTensors checkpoints: `<stem>-00001-of-0000N.safetensors` files plus the
`<stem>.safetensors.index.json` that maps each tensor to its shard.

How tensors are cut into shards, how shards are named and what the index holds are in
formats/safetensors.md ("Sharded checkpoints").
"""

from __future__ import annotations

import json
import os

from bundler.bundle import Tensor
from bundler.errors import BundlerIOError, FileNotFound, FormatError

INDEX_SUFFIX = ".safetensors.index.json"
DEFAULT_STEM = "model"
#: The cut the Hugging Face tools use by default: 5 GB, decimal.
DEFAULT_MAX_SHARD_SIZE = 5_000_000_000
#: Index files larger than this are refused before they are read.
MAX_INDEX_SIZE = 100_000_000


def plan(tensors: list[Tensor], max_shard_size: int) -> list[list[Tensor]]:
    """Cut `tensors`, in order, into shards of at most `max_shard_size` data bytes.

    A shard is closed when the next tensor would take it past the cut; a tensor larger
    than the cut gets a shard of its own. Concatenating the shards gives back the order.
    """
    shards: list[list[Tensor]] = [[]]
    size = 0
    for t in tensors:
        n = t.nbytes
        if shards[-1] and (n > max_shard_size or size + n > max_shard_size):
            shards.append([])
            size = 0
        shards[-1].append(t)
        size += n
        if n > max_shard_size:
            shards.append([])
            size = 0
    if not shards[-1] and len(shards) > 1:
        shards.pop()
    return shards


def shard_names(stem: str, count: int) -> list[str]:
    """File names of `count` shards: `<stem>-00001-of-00004.safetensors`, ..."""
    return [f"{stem}-{i:05d}-of-{count:05d}.safetensors" for i in range(1, count + 1)]


def stem_of(path: str) -> str:
    """The stem shard and index names are made from (`model` for `model.safetensors`)."""
    base = os.path.basename(path)
    return base[: -len(".safetensors")] if base.endswith(".safetensors") else base


def index_text(shards: list[list[Tensor]], names: list[str]) -> str:
    """The index JSON: total data bytes and the shard of every tensor; indent 2, sorted keys,
    a final newline."""
    weight_map = {t.name: name for shard, name in zip(shards, names, strict=True) for t in shard}
    total = sum(t.nbytes for shard in shards for t in shard)
    index = {"metadata": {"total_size": total}, "weight_map": weight_map}
    return json.dumps(index, indent=2, sort_keys=True) + "\n"


def looks_like_index(head: bytes) -> bool:
    """True when a file's first bytes are JSON text (an index), not a SafeTensors prefix."""
    return head.lstrip(b" \t\r\n").startswith(b"{")


def entry_in_directory(directory: str) -> str:
    """The file to open for a checkpoint directory: its index, else its one SafeTensors file."""
    try:
        names = sorted(os.listdir(directory))
    except OSError as exc:
        raise BundlerIOError(f"{directory}: {exc.strerror or exc}") from None
    if DEFAULT_STEM + INDEX_SUFFIX in names:
        return os.path.join(directory, DEFAULT_STEM + INDEX_SUFFIX)
    indexes = [n for n in names if n.endswith(INDEX_SUFFIX)]
    files = [n for n in names if n.endswith(".safetensors")]
    for found in (indexes, files):
        if len(found) == 1:
            return os.path.join(directory, found[0])
        if found:
            raise FormatError(
                directory,
                None,
                f"holds several checkpoints ({', '.join(found[:4])}); open one of them",
            )
    raise FormatError(directory, None, "is a directory with no SafeTensors files or index")


def read_index(path: str) -> tuple[list[str], dict[str, list[str]]]:
    """The shard file names of an index in shard order, and each shard's tensor names."""
    try:
        size = os.path.getsize(path)
        if size > MAX_INDEX_SIZE:
            raise FormatError(path, 0, f"index of {size:,} bytes is larger than {MAX_INDEX_SIZE:,}")
        with open(path, "rb") as f:
            raw = f.read(size + 1)
    except FileNotFoundError:
        raise FileNotFound(path) from None
    except OSError as exc:
        raise BundlerIOError(f"{path}: {exc.strerror or exc}") from None
    try:
        text = raw.decode("utf-8")
        index = json.loads(text)
    except UnicodeDecodeError as exc:
        raise FormatError(path, exc.start, "index is not valid UTF-8 text") from None
    except json.JSONDecodeError as exc:
        at = len(text[: exc.pos].encode("utf-8"))
        raise FormatError(path, at, f"index is not valid JSON: {exc.msg}") from None
    except (ValueError, RecursionError) as exc:
        raise FormatError(path, 0, f"index is not valid JSON: {exc}") from None
    if not isinstance(index, dict) or not isinstance(index.get("weight_map"), dict):
        raise FormatError(path, 0, "index must be a JSON object with a 'weight_map' object")
    if not isinstance(index.get("metadata", {}), dict):
        raise FormatError(path, 0, "index 'metadata' must be an object")
    members: dict[str, list[str]] = {}
    for tensor, shard in index["weight_map"].items():
        if not isinstance(shard, str) or not _is_plain_file_name(shard):
            raise FormatError(
                path, 0, f"weight_map entry {tensor!r}: {shard!r} is not a file name in this folder"
            )
        members.setdefault(shard, []).append(tensor)
    return sorted(members), members


def _is_plain_file_name(name: str) -> bool:
    return bool(name) and name not in (".", "..") and not any(c in name for c in "/\\\0")
