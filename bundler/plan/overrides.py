"""llama-quantize's `--override-kv KEY=TYPE:VALUE`: metadata set in the output, parsed as
llama.cpp parses it (`string_parse_kv_override`) and typed as llama-quantize writes it.

- `int:` a decimal integer (C `atol`: leading blanks and a sign, digits up to the first
  other character, 0 when none); written as UINT32 of its absolute value, cut to 32 bits.
- `float:` a decimal or hexadecimal float, `inf` or `nan` (C `atof`: the longest prefix
  that parses, 0 when none); written as FLOAT32.
- `bool:` exactly `true` or `false`; written as BOOL.
- `str:` at most 127 bytes; written as STRING.

The key is at most 127 bytes and not empty. Anything else is a UsageError.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

import numpy as np

from bundler.bundle import ValueType
from bundler.errors import UsageError

MAX_BYTES = 127

_INT = re.compile(r"[ \t\n\v\f\r]*([+-]?\d*)")
_FLOAT = re.compile(
    r"[ \t\n\v\f\r]*([+-]?(?:0[xX](?:[0-9a-fA-F]+\.?[0-9a-fA-F]*|\.[0-9a-fA-F]+)(?:[pP][+-]?\d+)?"
    r"|(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?|inf(?:inity)?|nan))",
    re.IGNORECASE,
)


def parse(text: str) -> tuple[str, object, ValueType]:
    """(key, value, type) of one `KEY=TYPE:VALUE`."""
    key, sep, rest = text.partition("=")
    if not sep or len(key.encode()) > MAX_BYTES or not key:
        raise UsageError(f"--override-kv {text!r}: expected KEY=TYPE:VALUE, KEY of 1 to 127 bytes")
    kind, colon, value = rest.partition(":")
    if not colon or kind not in ("int", "float", "bool", "str"):
        raise UsageError(f"--override-kv {text!r}: the type must be int:, float:, bool: or str:")
    if kind == "int":
        digits = _INT.match(value).group(1)
        number = int(digits) if digits.lstrip("+-") else 0
        number = max(-(2**63), min(2**63 - 1, number))  # atol saturates
        return key, abs(number) % 2**32, ValueType.UINT32
    if kind == "float":
        found = _FLOAT.match(value)
        number = _c_float(found.group(1)) if found else 0.0
        with np.errstate(over="ignore"):
            return key, float(np.float32(number)), ValueType.FLOAT32
    if kind == "bool":
        if value not in ("true", "false"):
            raise UsageError(f"--override-kv {text!r}: a bool is true or false")
        return key, value == "true", ValueType.BOOL
    if len(value.encode()) > MAX_BYTES:
        raise UsageError(f"--override-kv {text!r}: a string value is at most 127 bytes")
    return key, value, ValueType.STRING


def _c_float(text: str) -> float:
    if text.lower().lstrip("+-").startswith("0x"):
        sign = -1.0 if text.startswith("-") else 1.0
        return sign * float.fromhex(text.lstrip("+-"))
    return float(text)


def updates(texts: Iterable[str]) -> dict[str, tuple[object, ValueType]]:
    """The metadata updates of several overrides, in order (a later one of the same key
    wins)."""
    out = {}
    for text in texts:
        key, value, vtype = parse(text)
        out.pop(key, None)
        out[key] = (value, vtype)
    return out
