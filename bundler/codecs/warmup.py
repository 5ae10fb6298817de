"""Compiling the codec kernels ahead of their first use (`bundler warmup`), for images and
CI runs that should not pay for it during a conversion."""

from __future__ import annotations

import sys
import time
from collections.abc import Sequence
from typing import Any

import numpy as np

from bundler.codecs import kernels
from bundler.codecs.registry import Codec, all_codecs, get

#: Columns of the sample each codec encodes: a whole number of blocks of every codec.
_SAMPLE_COLS = 256


def compiled_codecs() -> list[str]:
    """The codecs whose kernels are compiled (the block codecs bundler can encode)."""
    return [c.name for c in all_codecs() if c.facts.has_kernels and c.facts.is_block]


def warmup(names: Sequence[str] | None = None) -> dict[str, Any]:
    """Compile, or load from the cache, the encode and decode kernels of `names` (default:
    every compiled codec), for writable and read-only (memory-mapped) arrays alike.

    Returns per codec the functions compiled now (0: they were cached) and the seconds.
    """
    chosen = [get(n) for n in names] if names else [get(n) for n in compiled_codecs()]
    started = time.perf_counter()
    kernels.AHEAD_OF_TIME[0] = True
    try:
        rows = [_warm(codec) for codec in chosen]
    finally:
        kernels.AHEAD_OF_TIME[0] = False
    return {
        "cache_dirs": _cache_dirs(),
        "codecs": rows,
        "compiled_functions": sum(r["compiled_functions"] for r in rows),
        "seconds": time.perf_counter() - started,
    }


def _warm(codec: Codec) -> dict[str, Any]:
    labels = (f"{codec.name} encoder", f"{codec.name} decoder")
    before = sum(kernels.COMPILED[label] for label in labels)
    started = time.perf_counter()
    x = np.linspace(-1.0, 1.0, 2 * _SAMPLE_COLS, dtype=np.float32).reshape(2, _SAMPLE_COLS)
    for writable in (True, False):
        x.setflags(write=writable)
        raw = codec.encode(x)
        raw.setflags(write=writable)
        codec.decode(raw, x.shape)
    return {
        "codec": codec.name,
        "compiled_functions": sum(kernels.COMPILED[label] for label in labels) - before,
        "seconds": time.perf_counter() - started,
    }


def _cache_dirs() -> list[str]:
    """Where the compiler caches the kernels of the loaded kernel modules."""
    found = set()
    for name, module in list(sys.modules.items()):
        if not name.startswith("bundler.codecs.") or module is None:
            continue
        for value in vars(module).values():
            path = getattr(getattr(value, "stats", None), "cache_path", None)
            if isinstance(path, str):
                found.add(path)
    return sorted(found)
