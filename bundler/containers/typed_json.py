"""Typed metadata as canonical JSON, for containers whose metadata is JSON (SafeTensors'
string-only `__metadata__`, APR's metadata object).

A bundle's metadata is a JSON array of entries in order, each `[key, TYPE, value]`, or
`[key, "ARRAY", ITEM_TYPE, [values...]]` for arrays; TYPE names are GGUF's value types.
Floats are written with the shortest repr that reads back to the same double (a FLOAT32
widened to double reads back exactly); NaN and infinities as the strings "nan", "inf",
"-inf". Nested arrays hold `[TYPE, value]` / `["ARRAY", ITEM_TYPE, [...]]` entries.
The text is compact (no spaces) and the same bytes for the same metadata. See
formats/safetensors.md and formats/apr.md.
"""

from __future__ import annotations

import json
import math
from typing import Any

import numpy as np

from bundler.bundle import Metadata, Value, ValueType
from bundler.errors import FormatError

_FLOATS = (ValueType.FLOAT32, ValueType.FLOAT64)
_SPECIAL = {"nan": math.nan, "inf": math.inf, "-inf": -math.inf}


def _float_out(v: float) -> Any:
    if math.isfinite(v):
        return float(v)
    return "nan" if math.isnan(v) else ("inf" if v > 0 else "-inf")


def _float_in(v: Any) -> float:
    return _SPECIAL[v] if isinstance(v, str) else float(v)


def _scalar_out(t: ValueType, v: Any) -> Any:
    return _float_out(v) if t in _FLOATS else v


def _value_out(value: Value) -> list[Any]:
    if value.type != ValueType.ARRAY:
        return [value.type.name, _scalar_out(value.type, value.value)]
    item = value.item_type
    if item == ValueType.ARRAY:
        items = [_value_out(v) for v in value.value]
    elif isinstance(value.value, np.ndarray):
        items = value.value.tolist()
        if item in _FLOATS:
            items = [_float_out(v) for v in items]
    else:
        items = list(value.value)
    return ["ARRAY", item.name, items]


def to_entries(metadata: Metadata) -> list[Any]:
    """Typed, ordered metadata as the plain JSON list that `dumps` writes."""
    return [[key, *_value_out(v)] for key, v in metadata.typed_items()]


def dumps(metadata: Metadata) -> str:
    """Canonical compact JSON of typed, ordered metadata."""
    entries = to_entries(metadata)
    return json.dumps(entries, separators=(",", ":"), ensure_ascii=False, allow_nan=False)


def _type(name: Any, where: str) -> ValueType:
    try:
        return ValueType[name]
    except (KeyError, TypeError):
        raise ValueError(f"{where}: unknown value type {name!r}") from None


def _value_in(entry: list[Any], where: str) -> Value:
    t = _type(entry[0], where)
    if t != ValueType.ARRAY:
        (raw,) = entry[1:]
        return Value(t, _float_in(raw) if t in _FLOATS else _check_scalar(t, raw, where))
    item_name, items = entry[1:]
    item = _type(item_name, where)
    if not isinstance(items, list):
        raise ValueError(f"{where}: array values must be a list")
    if item == ValueType.ARRAY:
        return Value(t, [_value_in(v, where) for v in items], item)
    if item == ValueType.STRING:
        if not all(isinstance(s, str) for s in items):
            raise ValueError(f"{where}: string array holds a non-string")
        return Value(t, items, item)
    values = [_float_in(v) for v in items] if item in _FLOATS else items
    return Value(t, np.array(values, dtype=item.numpy_dtype), item)


def _check_scalar(t: ValueType, raw: Any, where: str) -> Any:
    ok = {
        ValueType.STRING: isinstance(raw, str),
        ValueType.BOOL: isinstance(raw, bool),
    }.get(t, isinstance(raw, int) and not isinstance(raw, bool))
    if not ok:
        raise ValueError(f"{where}: {raw!r} is not a {t.name}")
    if t.numpy_dtype is not None and t != ValueType.BOOL:
        info = np.iinfo(t.numpy_dtype)
        if not info.min <= raw <= info.max:
            raise ValueError(f"{where}: {raw} does not fit {t.name}")
    return raw


def loads(text: str, path: str | None = None, offset: int | None = None) -> Metadata:
    """Typed metadata from `dumps` output; a malformed entry raises FormatError."""
    try:
        entries = json.loads(text)
    except (ValueError, RecursionError) as exc:
        raise FormatError(path, offset, f"bad typed metadata: {exc}") from None
    return from_entries(entries, path, offset)


def from_entries(entries: Any, path: str | None = None, offset: int | None = None) -> Metadata:
    """Typed metadata from an already-parsed `to_entries` list; FormatError when malformed."""
    try:
        if not isinstance(entries, list):
            raise ValueError("typed metadata must be a JSON array")
        md = Metadata()
        for i, entry in enumerate(entries):
            where = f"typed metadata entry {i}"
            if not isinstance(entry, list) or len(entry) < 3 or not isinstance(entry[0], str):
                raise ValueError(f"{where}: expected [key, TYPE, value]")
            if entry[0] in md:
                raise ValueError(f"{where}: duplicate key {entry[0]!r}")
            md[entry[0]] = _value_in(entry[1:], f"{where} ({entry[0]!r})")
        return md
    except (ValueError, TypeError, KeyError, OverflowError, RecursionError) as exc:
        raise FormatError(path, offset, f"bad typed metadata: {exc}") from None
