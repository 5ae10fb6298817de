"""What a model file holds, from its header alone: container facts, typed metadata with
arrays summarized, the tensor table and totals. No tensor payload is read and no kernel
is imported.

(Named `inspection`, not `inspect`, so that it can never shadow the standard library.)
"""

from __future__ import annotations

import os
from typing import Any

from bundler.bundle import Bundle, FileSource, Tensor, Value, ValueType
from bundler.containers import describe as describe_container
from bundler.containers import open_header

#: Items of an array shown when it is summarized.
ARRAY_HEAD = 8

__all__ = [
    "ARRAY_HEAD",
    "container_facts",
    "describe",
    "describe_value",
    "files",
    "headline",
    "open_header",
    "tensor_row",
    "totals",
    "type_name",
]


def type_name(value: Value) -> str:
    """`UINT32`, `STRING`, `ARRAY[STRING]`, ..."""
    if value.type == ValueType.ARRAY and value.item_type is not None:
        return f"ARRAY[{value.item_type.name}]"
    return value.type.name


def describe_value(value: Value, full: bool = False) -> dict[str, Any]:
    """A metadata value as plain data: its type and value; an array also gets its item
    type and count, and unless `full` only its first `ARRAY_HEAD` items (`truncated` says
    whether items were left out)."""
    if value.type != ValueType.ARRAY:
        return {"type": value.type.name, "value": value.value}
    items = value.value
    count = len(items)
    shown = items if full else items[:ARRAY_HEAD]
    head = Value(ValueType.ARRAY, shown, value.item_type).plain()
    return {
        "type": ValueType.ARRAY.name,
        "item_type": value.item_type.name if value.item_type is not None else None,
        "count": count,
        "value": head,
        "truncated": len(shown) < count,
    }


def tensor_row(index: int, tensor: Tensor) -> dict[str, Any]:
    """One row of the tensor table (shape in numpy order, outermost axis first)."""
    n = tensor.n_values
    source = tensor.source
    return {
        "index": index,
        "name": tensor.name,
        "shape": list(tensor.shape),
        "codec": tensor.codec.name,
        "bytes": tensor.nbytes,
        "bits_per_weight": 8.0 * tensor.nbytes / n if n else None,
        "offset": source.offset if isinstance(source, FileSource) else None,
        "file": os.path.basename(source.path) if isinstance(source, FileSource) else None,
    }


def totals(tensors: list[Tensor]) -> dict[str, Any]:
    """Tensor count, parameters and bytes, overall and by codec (codecs in first-seen order)."""
    by_codec: dict[str, dict[str, int]] = {}
    for t in tensors:
        row = by_codec.setdefault(t.codec.name, {"tensors": 0, "parameters": 0, "bytes": 0})
        row["tensors"] += 1
        row["parameters"] += t.n_values
        row["bytes"] += t.nbytes
    return {
        "tensors": len(tensors),
        "parameters": sum(t.n_values for t in tensors),
        "bytes": sum(t.nbytes for t in tensors),
        "by_codec": by_codec,
    }


def container_facts(bundle: Bundle) -> dict[str, Any]:
    """Format, files, bytes and the format's own facts (version, flags, ...) of the
    container the bundle was read from."""
    paths = files(bundle)
    facts: dict[str, Any] = {
        "format": bundle.format,
        "files": paths,
        "file_bytes": sum(_size(p) for p in paths),
    }
    details = describe_container(bundle)
    if details is not None:
        facts.update(details.facts())
        facts["summary"] = details.headline(_size_text(facts))
        facts["notes"] = details.notes()
    return facts


def headline(facts: dict[str, Any]) -> str:
    """One line for people about a container, from `container_facts`."""
    return facts.get("summary") or f"{facts['format']}; {_size_text(facts)}"


def _size_text(facts: dict[str, Any]) -> str:
    return f"{facts['file_bytes']:,} bytes in {len(facts['files'])} file(s)"


def files(bundle: Bundle) -> list[str]:
    """Every file the bundle was read from: its path, then its tensors' files, in order
    (a split set's files as the format lists them)."""
    details = describe_container(bundle)
    listed = details.files() if details is not None else None
    if listed is not None:
        return listed
    paths: list[str] = []
    for t in bundle.tensors.values():
        src = t.source
        if isinstance(src, FileSource) and src.path not in paths:
            paths.append(src.path)
    if bundle.path and os.path.isfile(bundle.path) and bundle.path not in paths:
        paths.insert(0, bundle.path)
    return paths


def _size(path: str) -> int:
    try:
        return os.path.getsize(path)
    except OSError:
        return 0


def describe(path: str | os.PathLike[str], full: bool = False) -> dict[str, Any]:
    """Everything `bundler inspect` reports about the model file at `path`."""
    bundle = open_header(path)
    tensors = list(bundle.tensors.values())
    return {
        "path": os.fspath(path),
        "container": container_facts(bundle),
        "metadata": {k: describe_value(v, full) for k, v in bundle.metadata.typed_items()},
        "tensors": [tensor_row(i, t) for i, t in enumerate(tensors)],
        "totals": totals(tensors),
    }
