"""Compiling the kernels ahead of their first use (`bundler warmup`), for images and CI runs
that should not pay for it during a conversion: every block codec's (weighted encoders
included), and the families called function by function (affine integers, embedding
vectors, error statistics, float conversions, GGUF string arrays)."""

from __future__ import annotations

import sys
import time
from collections.abc import Sequence
from typing import Any

import numpy as np

from bundler.codecs import kernels
from bundler.codecs.registry import Codec, all_codecs, get
from bundler.errors import UsageError

#: Columns of the sample each codec encodes: a whole number of blocks of every codec.
_SAMPLE_COLS = 256


def compiled_codecs() -> list[str]:
    """The codecs whose kernels are compiled (the block codecs bundler can encode)."""
    return [c.name for c in all_codecs() if c.facts.has_kernels and c.facts.is_block]


def _sample() -> np.ndarray:
    return np.linspace(-1.0, 1.0, 2 * _SAMPLE_COLS, dtype=np.float32).reshape(2, _SAMPLE_COLS)


def _warm_affine() -> None:
    # every code width, scale width (float32 or through float64) and calibration search
    # the kernels specialize on; the MSE search of many rows (64 and more) is one pass
    # with the quantization, of a few rows its own
    for spec, rows in (("int8:channel", 2), ("int8:channel:f16", 2), ("int8:asym", 2),
                       ("int4:g32:asym", 2), ("int16", 2), ("int16:asym", 2),
                       ("int8:channel:mse", 2), ("int8:channel:mse", 64),
                       ("int4:g32:asym:mse", 8), ("int4:g32:entropy", 2),
                       ("int4:g32:asym:entropy", 2)):  # fmt: skip
        codec = get(spec)
        for writable in (True, False):
            x = np.tile(_sample(), (rows // 2, 1))
            x.setflags(write=writable)
            codec.decode(codec.encode(x))


def _warm_vectors() -> None:
    from bundler.codecs import vectors

    x = _sample()
    for scheme in vectors.Scheme:
        q = vectors.quantize(x, scheme)
        q.dequantize()
        vectors.search(x[:1], q, k=1)


def _warm_stats() -> None:
    from bundler.stats import error_stats

    error_stats(_sample(), _sample(), 1)


def _warm_floats() -> None:
    from bundler.codecs.floats import COMPILED_FROM

    # the compiled F16/BF16 conversions run from COMPILED_FROM values (smaller: numpy)
    x = np.linspace(-1.0, 1.0, COMPILED_FROM, dtype=np.float32).reshape(1, -1)
    with kernels.compiling("float conversion"):
        for name in ("f16", "bf16"):
            codec = get(name)
            for writable in (True, False):
                x.setflags(write=writable)
                raw = codec.encode(x)
                raw.setflags(write=writable)
                codec.decode(raw, x.shape)


def _warm_gguf_strings() -> None:
    from bundler.bundle import Value, ValueType
    from bundler.containers.gguf import values

    # a long string array written, then read back from its bytes
    strings = Value(ValueType.ARRAY, [f"t{i}" for i in range(values.JOINED_FROM)], ValueType.STRING)
    body = values.array_body(strings, False, "warm-up")
    values.read_array(body, 0, len(body), ValueType.STRING, values.JOINED_FROM, False, "warm-up",
                      "strings")  # fmt: skip


#: Kernel families compiled function by function -> (their label in COMPILED, warm-up).
FAMILIES = {
    "affine": ("affine", _warm_affine),
    "vectors": ("vector", _warm_vectors),
    "stats": ("error statistics", _warm_stats),
    "floats": ("float conversion", _warm_floats),
    "gguf": ("GGUF string scan", _warm_gguf_strings),
}


def warmup(names: Sequence[str] | None = None) -> dict[str, Any]:
    """Compile, or load from the cache, the kernels of `names`: codecs (their encode and
    decode kernels, for writable and read-only (memory-mapped) arrays alike) or families
    (`affine`, `vectors`, `stats`, `floats`, `gguf`); default: every compiled codec and
    every family.

    Returns per name the functions compiled now (0: they were cached) and the seconds.
    """
    names = list(names) if names else [*compiled_codecs(), *FAMILIES]
    for name in names:
        if name not in FAMILIES:
            _check_codec(name)
    started = time.perf_counter()
    kernels.AHEAD_OF_TIME[0] = True
    try:
        rows = [_warm_family(n) if n in FAMILIES else _warm(get(n)) for n in names]
    finally:
        kernels.AHEAD_OF_TIME[0] = False
    return {
        "cache_dirs": _cache_dirs(),
        "codecs": rows,
        "compiled_functions": sum(r["compiled_functions"] for r in rows),
        "seconds": time.perf_counter() - started,
    }


def _check_codec(name: str) -> None:
    codec = get(name)  # UnknownCodecError for a name no codec has
    if not isinstance(codec, Codec):
        raise UsageError(
            f"{name} is one of a family's codecs: warm up its family ({', '.join(FAMILIES)})"
        )


def _warm_family(name: str) -> dict[str, Any]:
    label, warm = FAMILIES[name]
    before = kernels.COMPILED[label]
    started = time.perf_counter()
    warm()
    return {
        "codec": name,
        "compiled_functions": kernels.COMPILED[label] - before,
        "seconds": time.perf_counter() - started,
    }


def _warm(codec: Codec) -> dict[str, Any]:
    labels = (f"{codec.name} encoder", f"{codec.name} decoder", f"{codec.name} weighted encoder")
    before = sum(kernels.COMPILED[label] for label in labels)
    started = time.perf_counter()
    x = _sample()
    for writable in (True, False):
        x.setflags(write=writable)
        ones = np.ones(x.shape[-1], np.float32)
        raw = codec.encode(x, importance=ones if codec.facts.requires_importance else None)
        raw.setflags(write=writable)
        codec.decode(raw, x.shape)
        if codec.facts.takes_importance:  # the weighted search (llama-quantize --imatrix)
            codec.encode(x, importance=ones)
    return {
        "codec": codec.name,
        "compiled_functions": sum(kernels.COMPILED[label] for label in labels) - before,
        "seconds": time.perf_counter() - started,
    }


def _cache_dirs() -> list[str]:
    """Where the compiler caches the kernels of the loaded kernel modules."""
    found = set()
    for name, module in list(sys.modules.items()):
        if not name.startswith("bundler.") or module is None:
            continue
        for value in vars(module).values():
            path = getattr(getattr(value, "stats", None), "cache_path", None)
            if isinstance(path, str):
                found.add(path)
    return sorted(found)
