"""Limits every reader enforces while parsing a header, whatever the format.

Each limit bounds the work and memory a header can ask for; a file past one is refused
with a `FormatError` naming the file, the offset and the limit. Per-format limits (header
bytes, dimensions, name lengths) live in each format's schema; all are listed in
formats/*.md.
"""

from __future__ import annotations

import math

#: Most tensors in one file (or one shard): a million tensors may be listed, not billions.
MAX_TENSORS = 1 << 22
#: Largest product of a tensor's non-zero dimensions. numpy refuses an array whose element
#: count times item size (at most 8 bytes) passes 2**63 even when another dimension is 0,
#: so a zero-byte tensor with a huge dimension could never be materialized.
MAX_ELEMENTS = 1 << 59
#: Most metadata entries (top-level keys) in one file.
MAX_ENTRIES = 1 << 20
#: Deepest array nesting in typed metadata (an array of arrays is depth 2).
MAX_NESTING = 8
#: Most nested arrays (items of arrays of arrays) in all of a file's metadata: each costs
#: an object, so two million empty ones would cost half a gigabyte.
MAX_NESTED_ARRAYS = 1 << 16


def shape_problem(shape: tuple[int, ...] | list[int], max_dims: int) -> str | None:
    """Why `shape` cannot be a tensor (too many dimensions, too many elements), or None."""
    if len(shape) > max_dims:
        return f"{len(shape)} dimensions, more than the {max_dims} this format allows"
    nonzero = math.prod(d for d in shape if d)
    if nonzero > MAX_ELEMENTS:
        return (
            f"shape {list(shape)}: its non-zero dimensions multiply to {nonzero:,}, more than "
            f"{MAX_ELEMENTS:,} (2**59) elements; such a tensor cannot be materialized"
        )
    return None


class NestedBudget:
    """Counts one file's nested arrays against `MAX_NESTED_ARRAYS`."""

    def __init__(self) -> None:
        self.used = 0

    def take(self, n: int) -> str | None:
        """Count `n` more nested arrays; the problem once past the limit, else None."""
        self.used += n
        if self.used > MAX_NESTED_ARRAYS:
            return f"more than {MAX_NESTED_ARRAYS:,} nested arrays in the file's metadata"
        return None
