"""Inputs that exercise the rounding corners of the block codecs (reference notes' list)."""

from __future__ import annotations

import numpy as np

SEED = 1234


def normal_weights(rows: int = 64, cols: int = 4096, std: float = 0.02) -> np.ndarray:
    rng = np.random.default_rng(SEED)
    return (rng.standard_normal((rows, cols)) * std).astype(np.float32)


def bf16_rounded(rows: int = 64, cols: int = 4096) -> np.ndarray:
    """Weights whose low 16 bits are zero, as in models converted from bf16."""
    x = normal_weights(rows, cols)
    return (x.view(np.uint32) & np.uint32(0xFFFF0000)).view(np.float32)


def ties(cols: int = 256) -> np.ndarray:
    """Blocks whose scale is exactly 1, so that codes sit exactly on the rounding half.

    For the symmetric types the signed max is -8 / -16 / -127 and every other value is
    k + 0.5; for the affine types min 0 and max 15 / 31 with values k + 0.5.
    """
    rows = []
    for lo, hi in ((-8.0, 7.5), (-16.0, 15.5), (-127.0, 126.5), (0.0, 15.0), (0.0, 31.0)):
        row = np.resize(np.arange(lo + 0.5, hi, 1.0, dtype=np.float32), cols)
        row[::32] = lo
        row[1::32] = hi if lo == 0.0 else lo + 0.5
        rows.append(row)
    return np.stack(rows).astype(np.float32)


def zero_blocks(cols: int = 128) -> np.ndarray:
    x = np.zeros((3, cols), np.float32)
    x[1, 32:64] = normal_weights(1, 32)[0]  # one live block between zero ones
    return x


def huge_scales(cols: int = 256) -> np.ndarray:
    """|x| near 1e6 and beyond: the half scale overflows to infinity."""
    rng = np.random.default_rng(SEED + 1)
    return (rng.standard_normal((4, cols)) * np.array([[5e5], [1e6], [3e7], [1e30]])).astype(
        np.float32
    )


def subnormal_scales(cols: int = 256) -> np.ndarray:
    """Tiny magnitudes whose half scale is subnormal or rounds to zero."""
    rng = np.random.default_rng(SEED + 2)
    scales = np.array([[1e-3], [1e-5], [1e-7], [1e-9], [1e-30], [1e-44]])
    return (rng.standard_normal((6, cols)) * scales).astype(np.float32)


def constant_blocks(cols: int = 128) -> np.ndarray:
    return np.array([[0.5] * cols, [-3.25] * cols, [1e-20] * cols], np.float32)


def single_block() -> np.ndarray:
    return normal_weights(1, 32)[0]


def three_d() -> np.ndarray:
    return normal_weights(24, 256).reshape(2, 12, 256)


CASES = {
    "normal": normal_weights,
    "bf16_rounded": bf16_rounded,
    "ties": ties,
    "zero_blocks": zero_blocks,
    "huge_scales": huge_scales,
    "subnormal_scales": subnormal_scales,
    "constant_blocks": constant_blocks,
    "single_block": single_block,
    "three_d": three_d,
}
