"""Byte-swapping of encoded tensors for big-endian containers.

Only the multi-byte fields a codec declares in `CodecFacts.swap_fields` are reversed (the
half scales of a block, or the whole element of an element type); nibbles and int8 codes
stay as they are.
"""

from __future__ import annotations

import numpy as np

from bundler.codecs.facts import CodecFacts


def swap_inplace(raw: np.ndarray, facts: CodecFacts) -> np.ndarray:
    """Reverse the multi-byte fields of every block of `raw` (a writable uint8 array)."""
    if not facts.swap_fields or raw.size == 0:
        return raw
    head = facts.header_bytes
    if head:
        raw[:head] = raw[:head][::-1].copy()
    body = raw.reshape(-1)[head:]
    blocks = body[: body.size - body.size % facts.type_size].reshape(-1, facts.type_size)
    for offset, width in facts.swap_fields:
        field = blocks[:, offset : offset + width]
        field[...] = field[:, ::-1].copy()
    return raw


def swapped(raw: np.ndarray, facts: CodecFacts) -> np.ndarray:
    """A byte-swapped copy of `raw` (the input is left alone)."""
    return swap_inplace(np.array(raw, dtype=np.uint8, copy=True), facts)
