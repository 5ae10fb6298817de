"""GGUF split sets: `<stem>-00001-of-0000N.gguf` shards and their `split.*` keys.

Every shard carries `split.no` (UINT16, 0-based), `split.count` (UINT16) and
`split.tensors.count` (INT32, tensors over all shards); only the first carries the
bundle's metadata. A set is read as one bundle whose metadata has no `split.*` keys.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable

from bundler.bundle import Tensor, Value, ValueType
from bundler.containers.gguf import schema as S
from bundler.containers.gguf.reader import Layout, parse
from bundler.errors import FileNotFound, FormatError, UsageError

SPLIT_NO, SPLIT_COUNT, SPLIT_TENSORS = "split.no", "split.count", "split.tensors.count"
SPLIT_KEYS = (SPLIT_NO, SPLIT_COUNT, SPLIT_TENSORS)
_TYPES = {SPLIT_NO: ValueType.UINT16, SPLIT_COUNT: ValueType.UINT16, SPLIT_TENSORS: ValueType.INT32}
SHARD_NAME = re.compile(r"^(?P<stem>.+)-(?P<no>\d{5})-of-(?P<count>\d{5})\.gguf$", re.IGNORECASE)
MAX_SHARDS = 99999


def shard_paths(path: str, count: int) -> list[str]:
    """The shard paths of a set of `count` written for `path` (`model.gguf` ->
    `model-00001-of-00003.gguf`, ...)."""
    if count > MAX_SHARDS:
        raise UsageError(f"a split set has at most {MAX_SHARDS} shards, this needs {count}")
    base = path[:-5] if path.lower().endswith(".gguf") else path
    return [f"{base}-{i:05d}-of-{count:05d}.gguf" for i in range(1, count + 1)]


def group_tensors(
    tensors: Iterable[Tensor], max_bytes: int, max_tensors: int
) -> list[list[Tensor]]:
    """Tensors grouped into shards, in order: a new shard starts when the current one is not
    empty and adding the next tensor would pass `max_tensors` or `max_bytes` of tensor data."""
    groups: list[list[Tensor]] = [[]]
    size = 0
    for t in tensors:
        cur = groups[-1]
        if cur and (
            (max_tensors and len(cur) >= max_tensors) or (max_bytes and size + t.nbytes > max_bytes)
        ):
            groups.append([])
            size = 0
        groups[-1].append(t)
        size += t.nbytes
    return groups


def split_kvs(index: int, count: int, total_tensors: int) -> list[tuple[str, Value]]:
    """The `split.*` key/value pairs of shard `index` (0-based)."""
    if total_tensors >= 1 << 31:
        raise UsageError(f"split.tensors.count is INT32; {total_tensors:,} tensors do not fit")
    values = (index, count, total_tensors)
    return [(k, Value(_TYPES[k], v)) for k, v in zip(SPLIT_KEYS, values, strict=True)]


def take_split_keys(layout: Layout) -> dict[str, int] | None:
    """Remove the `split.*` keys from `layout.metadata`; their values, or None when absent."""
    md = layout.metadata
    found = {k: md.typed(k) for k in SPLIT_KEYS if k in md}
    if not found:
        return None
    for key, v in found.items():
        if v.type not in (ValueType.UINT16, ValueType.INT32, ValueType.UINT32, ValueType.INT64):
            raise FormatError(layout.path, None, f"{key} must be an integer, not {v.type.name}")
        del md[key]
    if SPLIT_COUNT not in found or SPLIT_NO not in found:
        missing = SPLIT_COUNT if SPLIT_COUNT not in found else SPLIT_NO
        raise FormatError(layout.path, None, f"split keys present but {missing} is missing")
    return {k: int(v.value) for k, v in found.items()}


def read_set(path: str, first: Layout, keys: dict[str, int]) -> tuple[list[Layout], str]:
    """Every shard of the split set `path` belongs to, in order, and the first shard's path.

    Opening any shard opens the whole set; the shards must agree on `split.count`, number
    themselves 0..N-1 in file-name order, and hold `split.tensors.count` tensors in all.
    """
    count = keys[SPLIT_COUNT]
    name = os.path.basename(path)
    m = SHARD_NAME.match(name)
    if not m or int(m["count"]) != count:
        raise FormatError(
            path,
            None,
            f"split.count is {count} but the file name is not <stem>-NNNNN-of-{count:05d}.gguf",
        )
    directory = os.path.dirname(path)
    paths = [
        os.path.join(directory, f"{m['stem']}-{i:05d}-of-{m['count']}.gguf")
        for i in range(1, count + 1)
    ]
    layouts: list[Layout] = []
    tensors_count: int | None = None
    for i, p in enumerate(paths):
        if os.path.abspath(p) == os.path.abspath(path):
            layout, shard_keys = first, keys
        else:
            try:
                layout = parse(p)
            except FileNotFound:
                raise FormatError(path, None, f"shard {i + 1} of {count} is missing: {p}") from None
            shard_keys = take_split_keys(layout) or {}
        if shard_keys.get(SPLIT_NO) != i or shard_keys.get(SPLIT_COUNT) != count:
            raise FormatError(
                p,
                None,
                f"shard {i + 1} of {count} says split.no={shard_keys.get(SPLIT_NO)} "
                f"split.count={shard_keys.get(SPLIT_COUNT)}",
            )
        if i == 0:
            tensors_count = shard_keys.get(SPLIT_TENSORS)
        layouts.append(layout)
    total = sum(len(x.tensors) + len(x.skipped) for x in layouts)
    if tensors_count is not None and tensors_count != total:
        raise FormatError(
            paths[0],
            None,
            f"split.tensors.count is {tensors_count} but the shards hold {total} tensors",
        )
    for layout in layouts[1:]:
        _check_extra_metadata(layouts[0], layout)
    return layouts, paths[0]


def _check_extra_metadata(first: Layout, other: Layout) -> None:
    """Later shards may repeat the first shard's keys (e.g. general.alignment), not differ."""
    for key, v in other.metadata.typed_items():
        if key not in first.metadata or first.metadata.typed(key) != v:
            raise FormatError(
                other.path,
                None,
                f"metadata {key!r} appears in a later shard but not (or differently) in the "
                "first; only the first shard carries metadata",
            )


def later_shard_kvs(items: list[tuple[str, Value]]) -> list[tuple[str, Value]]:
    """What later shards repeat of the first shard's metadata: a non-default alignment,
    without which their data offsets would be read wrong."""
    return [
        (k, v)
        for k, v in items
        if k == S.ALIGNMENT_KEY and not (v.type == ValueType.UINT32 and v.value == 32)
    ]
