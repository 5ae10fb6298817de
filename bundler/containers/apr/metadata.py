"""The APR metadata JSON: aprender's own fields, plus the bundle's typed metadata.

Writing: aprender's fields in aprender's order (`model_type`, `name`, `license`,
`data_source`, `data_license`, `total_size`, `param_count`), derived from the bundle, then
the key `bundler.metadata` holding the typed metadata as the JSON array of
`typed_json.to_entries`. Reading: when `bundler.metadata` is present it IS the bundle's
metadata (aprender's fields are derived, so ignored); when absent (a file aprender wrote),
every top-level field becomes one metadata entry with an inferred type, in file order.
See formats/apr.md.
"""

from __future__ import annotations

import json
from typing import Any

import numpy as np

from bundler.bundle import Metadata, Tensor, Value, ValueType
from bundler.containers import typed_json
from bundler.errors import FormatError

BUNDLER_KEY = "bundler.metadata"

_INT64 = (-(2**63), 2**63 - 1)
_UINT64_MAX = 2**64 - 1


class _Pairs(list):
    """A JSON object as its (key, value) pairs, in file order, duplicates kept."""


def _string(metadata: Metadata, key: str) -> str | None:
    if key in metadata and metadata.typed(key).type == ValueType.STRING:
        return metadata[key]
    return None


def dumps(metadata: Metadata, tensors: list[Tensor]) -> bytes:
    """The compact metadata JSON this project writes for `metadata` and `tensors`."""
    obj: dict[str, Any] = {"model_type": _string(metadata, "general.architecture") or "custom"}
    name = _string(metadata, "general.name")
    if name:
        obj["name"] = name
    obj["license"] = _string(metadata, "general.license") or None
    obj["data_source"] = None
    obj["data_license"] = None
    obj["total_size"] = sum(t.nbytes for t in tensors)
    obj["param_count"] = sum(t.n_values for t in tensors)
    obj[BUNDLER_KEY] = typed_json.to_entries(metadata)
    text = json.dumps(obj, separators=(",", ":"), ensure_ascii=False, allow_nan=False)
    return text.encode("utf-8")


def loads(raw: bytes, path: str | None, offset: int) -> tuple[Metadata, bool]:
    """The bundle metadata of a metadata section, and whether it held `bundler.metadata`."""
    try:
        text = raw.decode("utf-8")
        obj = json.loads(text, object_pairs_hook=_Pairs) if text.strip() else _Pairs()
    except (ValueError, RecursionError) as exc:
        raise FormatError(path, offset, f"metadata is not valid UTF-8 JSON: {exc}") from None
    if not isinstance(obj, _Pairs):
        raise FormatError(path, offset, "metadata JSON must be an object")
    keys = [k for k, _ in obj]
    if len(set(keys)) != len(keys):
        dup = next(k for i, k in enumerate(keys) if k in keys[:i])
        raise FormatError(path, offset, f"metadata JSON repeats the key {dup!r}")
    fields = dict(obj)
    try:
        if BUNDLER_KEY in fields:
            return typed_json.from_entries(_plain(fields[BUNDLER_KEY]), path, offset), True
        md = Metadata()
        for key, value in obj:
            typed = infer(value)
            if typed is not None:
                md[key] = typed
        return md, False
    except RecursionError:
        raise FormatError(path, offset, "metadata JSON is nested too deeply") from None


def infer(value: Any) -> Value | None:
    """The typed value of a plain aprender metadata field (None for null: skipped)."""
    if value is None:
        return None
    if isinstance(value, bool):
        return Value(ValueType.BOOL, value)
    if isinstance(value, int):
        return _int(value)
    if isinstance(value, float):
        return Value(ValueType.FLOAT64, value)
    if isinstance(value, str):
        return Value(ValueType.STRING, value)
    if isinstance(value, list) and not isinstance(value, _Pairs):
        typed = _array(value)
        if typed is not None:
            return typed
    return Value(ValueType.STRING, _compact(value))


def _int(value: int) -> Value:
    if _INT64[0] <= value <= _INT64[1]:
        return Value(ValueType.INT64, value)
    if 0 <= value <= _UINT64_MAX:
        return Value(ValueType.UINT64, value)
    return Value(ValueType.STRING, str(value))


def _array(items: list[Any]) -> Value | None:
    if all(isinstance(v, str) for v in items):
        return Value(ValueType.ARRAY, list(items), ValueType.STRING)
    if not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in items):
        return None
    if any(isinstance(v, float) for v in items):
        if all(isinstance(v, float) or abs(v) < 2**1023 for v in items):
            return Value(ValueType.ARRAY, np.array(items, np.float64), ValueType.FLOAT64)
        return None
    if all(_INT64[0] <= v <= _INT64[1] for v in items):
        return Value(ValueType.ARRAY, np.array(items, np.int64), ValueType.INT64)
    return None


def _plain(value: Any) -> Any:
    """JSON value with objects turned back into dicts."""
    if isinstance(value, _Pairs):
        return {k: _plain(v) for k, v in value}
    if isinstance(value, list):
        return [_plain(v) for v in value]
    return value


def _compact(value: Any) -> str:
    return json.dumps(_plain(value), separators=(",", ":"), ensure_ascii=False)
