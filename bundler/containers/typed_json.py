"""Typed metadata as canonical JSON, for containers whose metadata is JSON (SafeTensors'
string-only `__metadata__`, APR's metadata object).

A bundle's metadata is a JSON array of entries in order, each `[key, TYPE, value]`, or
`[key, "ARRAY", ITEM_TYPE, [values...]]` for arrays; TYPE names are GGUF's value types.
Floats are written with the shortest repr that reads back to the same double (a FLOAT32
widened to double reads back exactly); NaN and infinities as the strings "nan", "inf",
"-inf". An array of arrays holds `["ARRAY", ITEM_TYPE, [...]]` entries only.
Reading is strict: a value of the wrong JSON type (a bool for a number, 1.5 for an
integer, a scalar in an array of arrays) is an error, never converted.
The text is compact (no spaces) and the same bytes for the same metadata. See
formats/safetensors.md and formats/apr.md.
"""

from __future__ import annotations

import json
import math
from typing import Any

import numpy as np

from bundler.bundle import Metadata, Value, ValueType
from bundler.containers.limits import MAX_ENTRIES, MAX_NESTING, NestedBudget
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


def _value_in(entry: Any, where: str, budget: NestedBudget, depth: int = 0) -> Value:
    if not isinstance(entry, list) or not entry:
        raise ValueError(f"{where}: expected [TYPE, value] or ['ARRAY', ITEM_TYPE, [...]]")
    t = _type(entry[0], where)
    if t != ValueType.ARRAY:
        if len(entry) != 2:
            raise ValueError(f"{where}: a {t.name} entry is [TYPE, value], got {len(entry)} items")
        return Value(t, _check_scalar(t, entry[1], where))
    if len(entry) != 3:
        raise ValueError(f"{where}: an array entry is ['ARRAY', ITEM_TYPE, [...]]")
    item_name, items = entry[1:]
    item = _type(item_name, where)
    if not isinstance(items, list):
        raise ValueError(f"{where}: array values must be a list")
    if item == ValueType.ARRAY:
        if depth + 1 >= MAX_NESTING:
            raise ValueError(f"{where}: arrays nested more than {MAX_NESTING} deep")
        problem = budget.take(len(items))
        if problem:
            raise ValueError(f"{where}: {problem}")
        values = []
        for i, v in enumerate(items):
            if not isinstance(v, list) or v[:1] != ["ARRAY"]:
                raise ValueError(f"{where}[{i}]: an array of arrays holds ['ARRAY', ...] entries")
            values.append(_value_in(v, f"{where}[{i}]", budget, depth + 1))
        return Value(t, values, item)
    _check_items(item, items, where)
    if item == ValueType.STRING:
        return Value(t, items, item)
    values = [_float_in(v) for v in items] if item in _FLOATS else items
    return Value(t, np.array(values, dtype=item.numpy_dtype), item)


#: JSON types each value type takes; no coercion (a bool is not a number, 1.5 not an int).
_JSON_TYPES = {
    ValueType.STRING: {str},
    ValueType.BOOL: {bool},
    ValueType.FLOAT32: {int, float, str},
    ValueType.FLOAT64: {int, float, str},
}


def _check_items(t: ValueType, items: list[Any], where: str) -> None:
    """Every item of a `t` array has `t`'s JSON type and fits `t` (checks at C speed)."""
    allowed = _JSON_TYPES.get(t, {int})
    found = set(map(type, items))
    if not found <= allowed:
        bad = next(v for v in items if type(v) not in allowed)
        raise ValueError(f"{where}: {t.name} array holds {bad!r}, which is not a {t.name}")
    if t in _FLOATS and str in found:
        for v in items:
            if isinstance(v, str) and v not in _SPECIAL:
                raise ValueError(f"{where}: {v!r} is not a {t.name}")
    if items and t.numpy_dtype is not None and t.numpy_dtype.kind in "iu":
        info = np.iinfo(t.numpy_dtype)
        lo, hi = min(items), max(items)
        if lo < info.min or hi > info.max:
            bad = lo if lo < info.min else hi
            raise ValueError(f"{where}: {bad} does not fit {t.name}")


def _check_scalar(t: ValueType, raw: Any, where: str) -> Any:
    allowed = _JSON_TYPES.get(t, {int})
    if type(raw) not in allowed or (t in _FLOATS and isinstance(raw, str) and raw not in _SPECIAL):
        raise ValueError(f"{where}: {raw!r} is not a {t.name}")
    if t in _FLOATS:
        return _float_in(raw)
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
        if len(entries) > MAX_ENTRIES:
            raise ValueError(f"{len(entries):,} entries, more than {MAX_ENTRIES:,}")
        md = Metadata()
        budget = NestedBudget()
        for i, entry in enumerate(entries):
            where = f"typed metadata entry {i}"
            if not isinstance(entry, list) or len(entry) < 3 or not isinstance(entry[0], str):
                raise ValueError(f"{where}: expected [key, TYPE, value]")
            if entry[0] in md:
                raise ValueError(f"{where}: duplicate key {entry[0]!r}")
            md[entry[0]] = _value_in(entry[1:], f"{where} ({entry[0]!r})", budget)
        return md
    except (ValueError, TypeError, KeyError, OverflowError, RecursionError) as exc:
        raise FormatError(path, offset, f"bad typed metadata: {exc}") from None
