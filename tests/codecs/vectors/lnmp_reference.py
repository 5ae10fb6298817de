"""lnmp-quant's formulas restated independently, one value at a time, in float64 Python
arithmetic rounded to float32 after every operation (exactly what one float32 operation
gives: float64 holds every float32 sum, difference, product and quotient closely enough
that rounding it once more to float32 is the correctly rounded float32 result)."""

from __future__ import annotations

import math

import numpy as np


def f32(x: float) -> float:
    with np.errstate(over="ignore"):  # float32 overflow is infinity, as in Rust
        return float(np.float32(x))


TINY = f32(1e-10)


def _first_min(vals: list[float]) -> float:
    best = vals[0]
    for v in vals[1:]:
        if v < best:
            best = v
    return best


def _scale(vals: list[float], levels: float) -> tuple[float, float, float]:
    lo, hi = _first_min(vals), max(vals)
    span = f32(hi - lo)
    scale = 1.0 if abs(span) < TINY else f32(span / levels)
    inv = f32(1.0 / scale) if abs(scale) > TINY else 1.0
    return lo, scale, inv


def qint8(v) -> tuple[list[int], float, float]:
    """(codes, scale, min): codes = clamp(trunc((v - min) * (1 / scale)) - 128)."""
    vals = [f32(a) for a in v]
    lo, scale, inv = _scale(vals, 255.0)
    codes = [min(max(math.trunc(f32(f32(a - lo) * inv)) - 128, -128), 127) for a in vals]
    return codes, scale, lo


def qint8_decode(codes, scale: float, lo: float) -> list[float]:
    return [f32(f32((c + 128) * scale) + lo) for c in codes]


def qint4(v) -> tuple[list[int], float, float]:
    """(nibbles, scale, min): round half away from zero of (v - min) * (1 / scale), 0..15."""
    vals = [f32(a) for a in v]
    lo, scale, inv = _scale(vals, 15.0)
    nibbles = [min(max(math.floor(f32(f32(a - lo) * inv) + 0.5), 0), 15) for a in vals]
    return nibbles, scale, lo


def qint4_pack(nibbles: list[int]) -> bytes:
    padded = nibbles + [0] * (len(nibbles) % 2)
    return bytes((padded[i] << 4) | padded[i + 1] for i in range(0, len(padded), 2))


def qint4_decode(nibbles, scale: float, lo: float) -> list[float]:
    return [f32(f32(n * scale) + lo) for n in nibbles]


def binary(v) -> tuple[bytes, float]:
    """(packed bits LSB first, mean): bit set when value >= the sequential float32 mean."""
    vals = [f32(a) for a in v]
    total = 0.0
    for a in vals:
        total = f32(total + a)
    mean = f32(total / len(vals))
    out = bytearray((len(vals) + 7) // 8)
    for i, a in enumerate(vals):
        if a >= mean:
            out[i // 8] |= 1 << (i % 8)
    return bytes(out), mean


def fp16(v) -> bytes:
    with np.errstate(over="ignore"):
        return np.asarray(v, np.float32).astype("<f2").tobytes()


def dims_step(lo: float, hi: float, levels: int) -> float:
    """Per-dimension ranges (bundler's option, formats/vectors.md): lnmp-quant's step rule
    on one dimension's range [lo, hi]."""
    span = f32(f32(hi) - f32(lo))
    return 1.0 if abs(span) < TINY else f32(span / levels)


def dims_codes(column, lo: float, scale: float, levels: int) -> list[int]:
    """Codes of one dimension's values: round half away from zero of (v - lo) * (1 / scale),
    clamped to 0..levels."""
    inv = f32(1.0 / scale) if abs(scale) > TINY else 1.0
    codes = []
    for a in column:
        n = f32(f32(f32(a) - f32(lo)) * inv)
        r = 0 if n < 0 else math.trunc(n) + (1 if n - math.trunc(n) >= 0.5 else 0)
        codes.append(min(max(r, 0), levels))
    return codes


def dims_decode(codes, scale: float, lo: float) -> list[float]:
    return [f32(f32(c * scale) + f32(lo)) for c in codes]
