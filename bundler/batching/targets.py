"""Size targets in a batch: a job may name a file size or bits per weight instead of a
type, planned exactly as `quantize --target-size / --target-bpw` plans it
(`bundler.plan.target`). This module names such outputs and reads the targets a command
line or config gives."""

from __future__ import annotations

import math
from typing import Any

from bundler.errors import UsageError

#: Units a target's name uses when they divide it exactly, largest first.
_UNITS = (
    ("TiB", 2**40), ("T", 10**12), ("GiB", 2**30), ("G", 10**9),
    ("MiB", 2**20), ("M", 10**6), ("KiB", 2**10), ("K", 10**3),
)  # fmt: skip


def size_text(nbytes: int) -> str:
    """`nbytes` in the largest unit that divides it exactly (80000000 -> 80M), else bytes."""
    for unit, factor in _UNITS:
        if nbytes >= factor and nbytes % factor == 0:
            return f"{nbytes // factor}{unit}"
    return str(nbytes)


def target_label(size: int | None, bpw: float | None) -> str:
    """The name a size target takes where a type would stand (results, output names):
    target-80M, target-4.5bpw."""
    if size is not None:
        return f"target-{size_text(size)}"
    return f"target-{bpw:g}bpw"


def parse_bpw(value: Any) -> float:
    """Bits per weight from a number or its text; UsageError unless positive and finite."""
    if isinstance(value, bool):
        raise UsageError(f"not a number of bits per weight: {value!r}")
    try:
        bits = float(value)
    except (TypeError, ValueError):
        raise UsageError(f"not a number of bits per weight: {value!r}") from None
    if not (math.isfinite(bits) and bits > 0):
        raise UsageError(f"bits per weight must be a positive number, got {value!r}")
    return bits


def parse_targets(sizes: str | None, bpws: str | None) -> list[tuple[int | None, float | None]]:
    """The (size, bpw) targets of comma-separated `--target-size` / `--target-bpw` texts."""
    from bundler.sizes import parse_size

    found: list[tuple[int | None, float | None]] = []
    for text in (sizes or "").split(","):
        if text.strip():
            found.append((parse_size(text.strip()), None))
    for text in (bpws or "").split(","):
        if text.strip():
            found.append((None, parse_bpw(text.strip())))
    return list(dict.fromkeys(found))
