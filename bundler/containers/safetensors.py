"""SafeTensors read and write, byte-identical to the reference serializer's layout, with
sharded checkpoints and the convention for bundles SafeTensors cannot hold as they are.

`read` takes a SafeTensors file, a sharded checkpoint's index JSON, or a directory (its
`model.safetensors.index.json`, else its single `.safetensors` file). A shard opened on its
own reads as the file it is: just that shard's tensors. The normative description is
formats/safetensors.md.
"""

from __future__ import annotations

import os
from typing import Any, BinaryIO

from bundler.atomic import atomic_output, output_group
from bundler.bundle import Bundle, Tensor
from bundler.containers import safetensors_shards as shards
from bundler.containers.safetensors_convention import (
    META_KEY,
    bundle_parts,
    file_metadata,
    is_plain,
    stored_form,
)
from bundler.containers.safetensors_header import (
    MAX_HEADER_SIZE,
    PREFIX,
    PREFIX_SIZE,
    Planned,
    build_header,
    layout,
    read_header,
)
from bundler.errors import (
    BundlerIOError,
    FileNotFound,
    FormatError,
    OutputExistsError,
    UsageError,
)
from bundler.rawcopy import copy_raw

NAME = "safetensors"
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


def sniff(head: bytes) -> bool:
    """True when `head` starts with a plausible header length followed by '{'."""
    if len(head) <= PREFIX_SIZE:
        return False
    n = int.from_bytes(head[:PREFIX_SIZE], "little")
    if not 2 <= n <= MAX_HEADER_SIZE:
        return False
    return head[PREFIX_SIZE : PREFIX_SIZE + n].lstrip(b" \t\r\n")[:1] == b"{"


def sniff_path(path: str) -> bool:
    """True for what `read` takes besides SafeTensors files: a directory holding a checkpoint,
    or a `.json` file holding a JSON object (a sharded checkpoint's index)."""
    if os.path.isdir(path):
        try:
            return any(n.endswith((".safetensors", shards.INDEX_SUFFIX)) for n in os.listdir(path))
        except OSError:
            return False
    if not path.endswith(".json"):
        return False
    try:
        with open(path, "rb") as f:
            return shards.looks_like_index(f.read(64))
    except OSError:
        return False


# ---------------------------------------------------------------- reading


def read(path: str | os.PathLike[str]) -> Bundle:
    """Read a SafeTensors file, a sharded checkpoint (its index or its directory)."""
    path = os.fspath(path)
    if os.path.isdir(path):
        path = shards.entry_in_directory(path)
    head = _head(path)
    if not sniff(head) and (shards.looks_like_index(head) or path.endswith(".json")):
        return _read_sharded(path)
    return read_file(path)


def _head(path: str) -> bytes:
    try:
        with open(path, "rb") as f:
            return f.read(64)
    except FileNotFoundError:
        raise FileNotFound(path) from None
    except OSError as exc:
        raise BundlerIOError(f"{path}: {exc.strerror or exc}") from None


def read_file(path: str | os.PathLike[str]) -> Bundle:
    """Read one SafeTensors file; only its header is read, tensors stay in the file."""
    path = os.fspath(path)
    try:
        with open(path, "rb") as f:
            header = read_header(f, path, os.fstat(f.fileno()).st_size)
    except FileNotFoundError:
        raise FileNotFound(path) from None
    except IsADirectoryError:
        raise FormatError(path, None, "is a directory, not a SafeTensors file") from None
    except OSError as exc:
        raise BundlerIOError(f"{path}: {exc.strerror or exc}") from None
    metadata, tensors = bundle_parts(path, header)
    info = {
        "header_size": header.size,
        "metadata_object": header.metadata is not None,
        "convention": META_KEY in (header.metadata or {}),
    }
    return Bundle(metadata, tensors, format=NAME, path=path, format_info=info)


def _read_sharded(index_path: str) -> Bundle:
    names, members = shards.read_index(index_path)
    if not names:
        raise FormatError(index_path, 0, "the index's weight_map lists no tensors")
    directory = os.path.dirname(index_path)
    for name in names:
        if not os.path.isfile(os.path.join(directory, name)):
            raise FormatError(index_path, None, f"shard {name!r} named in the index is missing")
    parts = []
    for name in names:
        shard_path = os.path.join(directory, name)
        part = read_file(shard_path)
        listed, held = set(members[name]), set(part.tensors)
        if listed != held:
            raise FormatError(shard_path, None, _membership_problem(listed, held))
        # Plain shards may differ in metadata (the first one's is taken); typed metadata is
        # the bundle's and must agree.
        if parts and part.format_info["convention"] and part.metadata != parts[0].metadata:
            raise FormatError(shard_path, None, f"its {META_KEY} differs from the first shard's")
        parts.append(part)
    tensors = [t for part in parts for t in part.tensors.values()]
    info = {
        "shards": names,
        "shard_tensors": [list(part.tensors) for part in parts],
        "metadata_object": parts[0].format_info["metadata_object"],
    }
    return Bundle(parts[0].metadata, tensors, format=NAME, path=index_path, format_info=info)


def _membership_problem(listed: set[str], held: set[str]) -> str:
    problems = []
    if held - listed:
        problems.append(f"holds tensors {sorted(held - listed)[:5]} the index does not list for it")
    if listed - held:
        problems.append(f"lacks tensors {sorted(listed - held)[:5]} the index lists for it")
    return "; ".join(problems)


# ---------------------------------------------------------------- writing


def write(
    bundle: Bundle,
    path: str | os.PathLike[str],
    max_shard_size: int | None = None,
    force: bool = True,
    **options: Any,
) -> None:
    """Write `bundle` at `path` (a directory means `<path>/model.safetensors`).

    Tensors are laid out as the reference serializer lays them out and streamed from their
    sources chunk by chunk. A bundle read from a sharded checkpoint keeps its shards unless
    `max_shard_size` is given; otherwise, when the data exceeds `max_shard_size` bytes
    (default 5 GB), the bundle is cut
    into `<stem>-0000i-of-0000N.safetensors` shards beside `path` plus
    `<stem>.safetensors.index.json`; `path` itself is then not written.
    """
    path = os.fspath(path)
    if options:
        raise UsageError(
            f"unknown SafeTensors write option(s) {', '.join(sorted(options))}; "
            "valid: max_shard_size, force"
        )
    if max_shard_size is not None and (
        isinstance(max_shard_size, bool) or not isinstance(max_shard_size, int)
    ):
        raise UsageError(f"max_shard_size must be a number of bytes, got {max_shard_size!r}")
    if max_shard_size is not None and max_shard_size <= 0:
        raise UsageError(f"max_shard_size must be positive, got {max_shard_size:,}")
    if os.path.isdir(path):
        path = os.path.join(path, shards.DEFAULT_STEM + ".safetensors")
    tensors = list(bundle.tensors.values())
    planned = {t.name: stored_form(t) for t in tensors}
    groups = _source_shards(bundle) if max_shard_size is None else None
    if groups is None:
        groups = shards.plan(tensors, max_shard_size or DEFAULT_MAX_SHARD_SIZE)
    plain = is_plain(bundle.metadata, [[planned[t.name] for t in g] for g in groups], tensors)
    keep_empty = bundle.format == NAME and bool(bundle.format_info.get("metadata_object"))

    def one_file(target: str, group: list[Tensor]) -> None:
        md = file_metadata(bundle.metadata, group, plain, keep_empty)
        _write_file(target, md, group, [planned[t.name] for t in group], force)

    if len(groups) == 1:
        one_file(path, groups[0])
        return
    directory = os.path.dirname(os.path.abspath(path))
    stem = shards.stem_of(path)
    names = shards.shard_names(stem, len(groups))
    index_path = os.path.join(directory, stem + shards.INDEX_SUFFIX)
    targets = [os.path.join(directory, n) for n in names]
    if not force:
        for target in [*targets, index_path]:
            if os.path.exists(target):
                raise OutputExistsError(target)
    with output_group(entry=index_path):  # the shards and index appear together or not at all
        for target, group in zip(targets, groups, strict=True):
            one_file(target, group)
        with atomic_output(index_path, force) as f:
            f.write(shards.index_text(groups, names).encode("utf-8"))


def _source_shards(bundle: Bundle) -> list[list[Tensor]] | None:
    """The shards of the checkpoint the bundle was read from, when its tensors are still
    exactly those, in that order."""
    members = bundle.format_info.get("shard_tensors") if bundle.format == NAME else None
    if not members or [n for m in members for n in m] != list(bundle.tensors):
        return None
    return [[bundle.tensors[n] for n in m] for m in members]


def _write_file(
    path: str,
    metadata: dict[str, str] | None,
    tensors: list[Tensor],
    planned: list[Planned],
    force: bool,
) -> None:
    head = build_header(metadata, planned)
    by_name = {t.name: t for t in tensors}
    with atomic_output(path, force) as f:
        f.write(head)
        for p in layout(planned):
            _copy(f, by_name[p.name], p.nbytes)


def _copy(f: BinaryIO, tensor: Tensor, nbytes: int) -> None:
    """Copy a tensor's stored bytes into `f`, checking that the source gives exactly
    `nbytes` (a short or long source would shift every later tensor)."""
    if nbytes == 0:
        return  # nothing to stream (and an empty array may not split into rows)
    written = copy_raw(tensor, f, limit=nbytes)
    if written != nbytes:
        raise UsageError(
            f"tensor {tensor.name!r}: its source gives {'more than ' if written > nbytes else ''}"
            f"{written:,} bytes where {tensor.codec.name} {list(tensor.shape)} needs {nbytes:,}"
        )
