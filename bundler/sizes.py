"""Sizes people write: '500M', '2G', '1.5GiB', or a plain number of bytes."""

from __future__ import annotations

from bundler.errors import UsageError

#: K, M, G, T are powers of 1000; KiB, MiB, GiB, TiB powers of 1024.
UNITS = {"": 1, "K": 10**3, "M": 10**6, "G": 10**9, "T": 10**12}
UNITS |= {"KI": 2**10, "MI": 2**20, "GI": 2**30, "TI": 2**40}


def parse_size(text: str | int) -> int:
    """'500M' -> 500,000,000 bytes; raises UsageError for anything else or a size <= 0."""
    if isinstance(text, int) and not isinstance(text, bool):
        value: float = text
    else:
        s = str(text).strip().upper().removesuffix("B")
        number = s.rstrip("KMGTI")
        try:
            value = float(number) * UNITS[s[len(number) :]]
        except (ValueError, KeyError):
            raise UsageError(f"not a size: {text!r} (try 500M or 2G)") from None
    if value <= 0:
        raise UsageError(f"size must be positive: {text!r}")
    return int(value)
