"""SafeTensors writing: the reference writer's canonical header bytes and layout order, and
the streamed (optionally sharded) file."""

from __future__ import annotations

import json
import os
from typing import Any, BinaryIO

from bundler.atomic import atomic_output, output_group
from bundler.bundle import Bundle, Tensor
from bundler.containers.safetensors import shards as shards
from bundler.containers.safetensors.convention import (
    file_metadata,
    is_plain,
    stored_form,
)
from bundler.containers.safetensors.details import SafetensorsDetails
from bundler.containers.safetensors.schema import (
    MAX_HEADER_SIZE,
    METADATA_KEY,
    PREFIX_COMPILED,
    Planned,
    layout_key,
)
from bundler.errors import (
    OutputExistsError,
    UsageError,
)
from bundler.rawcopy import copy_raw


def layout(tensors: list[Planned]) -> list[Planned]:
    """The reference writer's data order."""
    return sorted(tensors, key=lambda t: layout_key(t.name, t.dtype))


def build_header(metadata: dict[str, str] | None, tensors: list[Planned]) -> bytes:
    """Prefix plus header bytes, exactly as the reference writer makes them for `tensors`
    laid out in `layout` order: compact JSON, `__metadata__` first (omitted when None), each
    entry's keys in the order dtype, shape, data_offsets, spaces up to a multiple of 8."""
    obj: dict[str, Any] = {}
    if metadata is not None:
        obj[METADATA_KEY] = metadata
    offset = 0
    for t in layout(tensors):
        if t.name == METADATA_KEY or t.name in obj:
            problem = "is reserved" if t.name == METADATA_KEY else "is used twice"
            raise UsageError(f"tensor name {t.name!r} {problem} in SafeTensors")
        obj[t.name] = {"dtype": t.dtype, "shape": list(t.shape), "data_offsets": [offset]}
        offset += t.nbytes
        obj[t.name]["data_offsets"].append(offset)
    text = json.dumps(obj, separators=(",", ":"), ensure_ascii=False, allow_nan=False)
    try:
        body = text.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise UsageError(f"SafeTensors header text is not valid Unicode: {exc}") from None
    body += b" " * (-len(body) % 8)
    if len(body) > MAX_HEADER_SIZE:
        raise UsageError(
            f"SafeTensors header would be {len(body):,} bytes; readers refuse more than "
            f"{MAX_HEADER_SIZE:,}"
        )
    return PREFIX_COMPILED.build({"header_size": len(body)}) + body


def write(
    bundle: Bundle,
    path: str | os.PathLike[str],
    max_shard_size: int | None = None,
    force: bool = True,
    **options: Any,
) -> None:
    """Write `bundle` at `path` (a directory means `<path>/model.safetensors`, and an
    affine-quantized bundle's quantization_config goes into `<path>/config.json` too).

    Tensors are laid out as the reference serializer lays them out and streamed from their
    sources chunk by chunk. A bundle read from a sharded checkpoint keeps its shards unless
    `max_shard_size` is given; otherwise, when the data exceeds `max_shard_size` bytes
    (default 5 GB), the bundle is cut
    into `<stem>-0000i-of-0000N.safetensors` shards beside `path` plus
    `<stem>.safetensors.index.json`; `path` itself is then not written.
    """
    path = os.fspath(path)
    if os.path.isdir(path):
        from bundler.codecs.affine.checkpoint import write_model_config

        _check_options(max_shard_size, options)
        write_model_config(bundle, path, force)
        path = os.path.join(path, shards.DEFAULT_STEM + ".safetensors")
    files = _plan_files(bundle, path, max_shard_size, options)
    if len(files) == 1:
        _write_file(*files[0], force)
        return
    directory = os.path.dirname(os.path.abspath(files[0][0]))
    stem = shards.stem_of(path)
    index_path = os.path.join(directory, stem + shards.INDEX_SUFFIX)
    if not force:
        for target in [*(f[0] for f in files), index_path]:
            if os.path.exists(target):
                raise OutputExistsError(target)
    with output_group(entry=index_path):  # the shards and index appear together or not at all
        for file in files:
            _write_file(*file, force)
        groups = [f[2] for f in files]
        names = [os.path.basename(f[0]) for f in files]
        with atomic_output(index_path, force) as f:
            f.write(shards.index_text(groups, names).encode("utf-8"))


def planned_size(
    bundle: Bundle, path: str | os.PathLike[str], max_shard_size: int | None = None, **options: Any
) -> int:
    """The bytes `write` would write for the tensor files (every shard; not the index or a
    model folder's config.json), computed from the headers and codecs alone."""
    files = _plan_files(bundle, os.fspath(path), max_shard_size, options)
    return sum(
        len(build_header(md, planned)) + sum(p.nbytes for p in planned)
        for _, md, _, planned in files
    )


def _check_options(max_shard_size: int | None, options: dict[str, Any]) -> None:
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


#: One output file: its path, its metadata object, its tensors and their stored forms.
_File = tuple[str, "dict[str, str] | None", "list[Tensor]", "list[Planned]"]


def _plan_files(
    bundle: Bundle, path: str, max_shard_size: int | None, options: dict[str, Any]
) -> list[_File]:
    """The files `write` writes for `bundle` at `path`, all checks but the header's done."""
    _check_options(max_shard_size, options)
    if os.path.isdir(path):
        path = os.path.join(path, shards.DEFAULT_STEM + ".safetensors")
    tensors = list(bundle.tensors.values())
    planned = {t.name: stored_form(t) for t in tensors}
    groups = _source_shards(bundle) if max_shard_size is None else None
    if groups is None:
        groups = shards.plan(tensors, max_shard_size or shards.DEFAULT_MAX_SHARD_SIZE)
    plain = is_plain(bundle.metadata, [[planned[t.name] for t in g] for g in groups], tensors)
    info = SafetensorsDetails.of(bundle)
    keep_empty = info is not None and info.metadata_object

    def one_file(target: str, group: list[Tensor]) -> _File:
        md = file_metadata(bundle.metadata, group, plain, keep_empty)
        return target, md, group, [planned[t.name] for t in group]

    if len(groups) == 1:
        return [one_file(path, groups[0])]
    directory = os.path.dirname(os.path.abspath(path))
    names = shards.shard_names(shards.stem_of(path), len(groups))
    return [one_file(os.path.join(directory, n), g) for n, g in zip(names, groups, strict=True)]


def _source_shards(bundle: Bundle) -> list[list[Tensor]] | None:
    """The shards of the checkpoint the bundle was read from, when its tensors are still
    exactly those, in that order."""
    info = SafetensorsDetails.of(bundle)
    members = info.shard_tensors if info else None
    if not members or [n for m in members for n in m] != list(bundle.tensors):
        return None
    return [[bundle.tensors[n] for n in m] for m in members]


def _reads_back(path: str) -> None:
    from bundler.containers.safetensors.reader import read_file

    read_file(path)


def _write_file(
    path: str,
    metadata: dict[str, str] | None,
    tensors: list[Tensor],
    planned: list[Planned],
    force: bool,
) -> None:
    head = build_header(metadata, planned)
    by_name = {t.name: t for t in tensors}
    with atomic_output(path, force, check=_reads_back) as f:
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
