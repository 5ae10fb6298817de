"""The floating-point scale fields of the block codecs, and a bounded-memory scan of a
tensor's scales for values no decoder can use (NaN) or that overflowed (infinity).

The fields come from the codec table (`CodecFacts.scale_fields`): the half or float32
scales each block's decoder multiplies by, or for a flat codec with a header (apr_q8) the
tensor's one scale in that header, scanned as block 0. (apr_q4 decodes a block with a NaN
scale as zeros, as aprender does: its values are lost all the same.)
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from bundler.bundle import CHUNK_BYTES, FileSource, Tensor
from bundler.codecs.facts import CodecFacts, Field

#: Blocks named one by one in a finding; the rest are only counted.
LISTED_BLOCKS = 10

_FLOAT_BITS = {2: (np.dtype("<u2"), 0x7C00, 0x03FF), 4: (np.dtype("<u4"), 0x7F800000, 0x7FFFFF)}


def scale_fields(facts: CodecFacts) -> tuple[Field, ...]:
    """The scale fields of one block of `facts` (empty for codecs without float scales)."""
    return facts.scale_fields


@dataclass
class Finding:
    """Every block of one tensor whose scale `field` is NaN (kind "nan") or infinite ("inf")."""

    tensor: str
    field: str
    kind: str
    count: int = 0
    blocks: list[int] = field(default_factory=list)
    #: file offset of the first such scale (None when the tensor is not in a file)
    offset: int | None = None
    path: str | None = None


def _blocks_per_row(tensor: Tensor) -> int | None:
    facts = tensor.codec.facts
    if facts.flat or not tensor.shape:
        return None
    return tensor.shape[-1] // facts.block_size


def where(tensor: Tensor, block: int) -> str:
    """`block 17 (row 0, block 17 of the row)`, or `block 17` for flat codecs."""
    per_row = _blocks_per_row(tensor)
    if not per_row:
        return f"block {block:,}"
    return f"block {block:,} (row {block // per_row:,}, block {block % per_row:,} of the row)"


def scan(
    tensor: Tensor,
    chunk_bytes: int = CHUNK_BYTES,
    progress: Callable[[int], None] | None = None,
) -> list[Finding]:
    """NaN and infinite scales of `tensor`, read a bounded chunk at a time."""
    facts = tensor.codec.facts
    fields = scale_fields(facts)
    if not fields or tensor.nbytes == 0:
        return []
    found: dict[tuple[str, str], Finding] = {}
    if facts.header_bytes:
        size = facts.header_bytes
        head = next(iter(tensor.iter_raw(max(chunk_bytes, size))))[:size].reshape(1, size)
        for f in fields:
            _check(tensor, found, f, head[:, f.offset : f.offset + f.width], 0)
        if progress:
            progress(tensor.nbytes)
        return list(found.values())
    unit = facts.type_size
    step = max(unit, chunk_bytes - chunk_bytes % unit)
    first_block = 0
    pending = np.zeros(0, np.uint8)
    for chunk in tensor.iter_raw(step):
        data = np.concatenate([pending, chunk]) if pending.size else chunk
        whole = data.size - data.size % unit
        blocks = data[:whole].reshape(-1, unit)
        for f in fields:
            _check(tensor, found, f, blocks[:, f.offset : f.offset + f.width], first_block)
        first_block += blocks.shape[0]
        pending = np.array(data[whole:])
        if progress:
            progress(chunk.size)
    return list(found.values())


def _check(
    tensor: Tensor,
    found: dict[tuple[str, str], Finding],
    f: Field,
    raw: np.ndarray,
    first_block: int,
) -> None:
    dtype, exponent, mantissa = _FLOAT_BITS[f.width]
    bits = np.ascontiguousarray(raw).view(dtype).reshape(-1)
    special = (bits & exponent) == exponent
    if not special.any():
        return
    nan = special & ((bits & mantissa) != 0)
    for kind, mask in (("nan", nan), ("inf", special & ~nan)):
        idx = np.flatnonzero(mask)
        if not idx.size:
            continue
        key = (f.name, kind)
        finding = found.get(key)
        if finding is None:
            finding = found[key] = Finding(tensor.name, f.name, kind)
            block = first_block + int(idx[0])
            src = tensor.source
            if isinstance(src, FileSource):
                finding.offset = src.offset + block * tensor.codec.facts.type_size + f.offset
                finding.path = src.path
        finding.count += idx.size
        room = LISTED_BLOCKS - len(finding.blocks)
        if room > 0:
            finding.blocks += [first_block + int(i) for i in idx[:room]]
