"""An importance matrix as llama-quantize uses it: per tensor, one weight per column (per
expert for a stacked-experts tensor), already divided by the number of activations seen,
plus what the file says of how it was computed."""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from bundler.bundle import ValueType
from bundler.errors import FormatError, UsageError

#: The keys llama-quantize adds to a model quantized with a matrix.
KEY_FILE = "quantize.imatrix.file"
KEY_DATASET = "quantize.imatrix.dataset"
KEY_ENTRIES = "quantize.imatrix.entries_count"
KEY_CHUNKS = "quantize.imatrix.chunks_count"
#: llama-quantize copies strings into a 128-byte field: at most 127 bytes survive.
MAX_STRING_BYTES = 127


@dataclass
class ImportanceMatrix:
    """Per-tensor importance weights (float32, 1-D) and the matrix's provenance.

    `entries` maps a tensor name to its weights: the tensor's columns, times its experts
    for a 3-D tensor. `offsets` gives, when read from a file, each entry's byte offset.
    """

    entries: dict[str, np.ndarray]
    datasets: tuple[str, ...] = ()
    chunk_count: int = 0
    chunk_size: int = 0
    path: str | None = None
    legacy: bool = False
    offsets: dict[str, int] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.entries)

    def __repr__(self) -> str:
        where = f", path={self.path!r}" if self.path else ""
        return (
            f"ImportanceMatrix({len(self.entries)} entries, {self.chunk_count} chunks"
            f"{', legacy' if self.legacy else ''}{where})"
        )

    @classmethod
    def from_mapping(cls, weights: Mapping[str, Any]) -> ImportanceMatrix:
        """A matrix from `{tensor name: weights}` (1-D, one per column, or per column and
        expert)."""
        entries = {}
        for name, values in weights.items():
            array = np.asarray(values, dtype=np.float32)
            if array.ndim != 1 or array.size == 0:
                raise UsageError(
                    f"importance weights for {name!r}: expected a non-empty 1-D array, "
                    f"got shape {array.shape}"
                )
            entries[str(name)] = np.ascontiguousarray(array)
        return cls(entries)

    def selected(
        self, include: Iterable[str] = (), exclude: Iterable[str] = ()
    ) -> ImportanceMatrix:
        """The entries llama-quantize keeps for `--include-weights` / `--exclude-weights`:
        an entry goes when its name contains an excluded string, and only entries whose
        name contains an included string stay. Giving both is a UsageError."""
        include, exclude = list(include), list(exclude)
        if include and exclude:
            raise UsageError("--include-weights and --exclude-weights cannot be used together")
        kept = {
            n: w
            for n, w in self.entries.items()
            if not any(x in n for x in exclude) and (not include or any(x in n for x in include))
        }
        return ImportanceMatrix(
            kept, self.datasets, self.chunk_count, self.chunk_size, self.path, self.legacy,
            {n: self.offsets[n] for n in kept if n in self.offsets},
        )  # fmt: skip

    def check_finite(self) -> None:
        """Raise FormatError naming the first entry holding a NaN or infinity (llama-quantize
        refuses such a matrix)."""
        for name, weights in self.entries.items():
            bad = np.flatnonzero(~np.isfinite(weights))
            if bad.size:
                raise FormatError(
                    self.path, self.offsets.get(name),
                    f"importance matrix entry {name!r} holds {weights[bad[0]]} at index "
                    f"{int(bad[0])}; every weight must be finite",
                )  # fmt: skip

    def metadata(
        self, source: str | os.PathLike[str] | None = None
    ) -> dict[str, tuple[Any, ValueType]]:
        """The keys llama-quantize writes for this matrix: the file name as given (when read
        from a file), the first dataset, the entry count and (when known) the chunk count;
        strings cut to 127 bytes as it cuts them. Empty when the matrix has no entries."""
        if not self.entries:
            return {}
        out: dict[str, tuple[Any, ValueType]] = {}
        given = source if source is not None else self.path
        if given is not None:
            out[KEY_FILE] = (_cut(os.fspath(given)), ValueType.STRING)
        if self.datasets:
            out[KEY_DATASET] = (_cut(self.datasets[0]), ValueType.STRING)
        out[KEY_ENTRIES] = (len(self.entries), ValueType.UINT32)
        if self.chunk_count > 0:
            out[KEY_CHUNKS] = (self.chunk_count, ValueType.UINT32)
        return out


def _cut(text: str) -> str:
    """`text` cut to MAX_STRING_BYTES of UTF-8 (a character the cut splits is dropped;
    llama-quantize would keep its first bytes)."""
    raw = text.encode("utf-8", "surrogateescape")
    if len(raw) <= MAX_STRING_BYTES:
        return text
    return raw[:MAX_STRING_BYTES].decode("utf-8", "ignore")
