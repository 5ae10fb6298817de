"""Inputs that exercise the corners of the K-quant searches (256-value super-blocks)."""

from __future__ import annotations

import numpy as np

SEED = 2024


def _rng(offset: int) -> np.random.Generator:
    return np.random.default_rng(SEED + offset)


def normal(rows: int = 16, cols: int = 1024, std: float = 0.02) -> np.ndarray:
    return (_rng(0).standard_normal((rows, cols)) * std).astype(np.float32)


def bf16_rounded(rows: int = 16, cols: int = 1024) -> np.ndarray:
    """Weights whose low 16 bits are zero, as in models converted from bf16."""
    return (normal(rows, cols).view(np.uint32) & np.uint32(0xFFFF0000)).view(np.float32)


def zero_sub_blocks() -> np.ndarray:
    """Super-blocks with some sub-blocks of 16 and of 32 all zero (the first-pass codes)."""
    x = normal(8, 256)
    for r in range(8):
        x[r, 16 * r : 16 * r + 16] = 0.0
        x[r, 32 * ((r + 3) % 8) : 32 * ((r + 3) % 8) + 32] = 0.0
    x[7, 16:240] = 0.0  # one live sub-block at each end
    return x


def zero_super_block() -> np.ndarray:
    x = normal(3, 768)
    x[1] = 0.0
    x[0, 256:512] = 0.0
    x[2, :256] = -0.0
    return x


def tiny() -> np.ndarray:
    """Magnitudes whose half scales are subnormal, round to zero, or underflow below eps."""
    scales = np.array([1e-3, 1e-5, 1e-6, 1e-7, 1e-8, 1e-9, 1e-13, 1e-16, 1e-30, 1e-44])
    return (_rng(1).standard_normal((scales.size, 256)) * scales[:, None]).astype(np.float32)


def huge() -> np.ndarray:
    """Magnitudes whose half scales overflow, up to sums of squares that overflow float32."""
    scales = np.array([6e4, 5e5, 1e6, 3e7, 1e19, 1e30, 3e38])
    x = _rng(2).standard_normal((scales.size, 256)) * scales[:, None]
    return np.clip(x, -3.4e38, 3.4e38).astype(np.float32)


def constant() -> np.ndarray:
    return np.array([[0.5] * 256, [-3.25] * 256, [1e-20] * 256, [7.0] * 256], np.float32)


def on_grid() -> np.ndarray:
    """Values on small integer grids: codes land exactly on rounding halves."""
    rng = _rng(3)
    rows = [
        rng.integers(-4, 4, 256) * 0.5,
        rng.integers(0, 16, 256) * 0.25,
        rng.integers(-32, 32, 256) * 1.0,
        rng.integers(-4, 4, 256) + 0.5,
        np.resize(np.arange(-8, 8, 0.5), 256),
    ]
    return np.stack(rows).astype(np.float32)


def outliers() -> np.ndarray:
    """Mostly near-zero super-blocks with a few large spikes."""
    x = normal(4, 512, 1e-4)
    x[0, ::97] = 3.0
    x[1, 5] = -50.0
    x[2, 300] = 1e4
    x[3, ::2] = 0.0
    return x


def mixed_rows() -> np.ndarray:
    """Rows with scales spread over 20 orders of magnitude and several distributions."""
    rng = _rng(4)
    parts = [
        rng.uniform(-1, 1, (4, 512)),
        rng.laplace(0, 0.01, (4, 512)),
        rng.standard_t(2, (4, 512)),
        rng.standard_normal((4, 512)) * np.logspace(-10, 10, 4)[:, None],
        np.abs(rng.standard_normal((2, 512))),
        -np.abs(rng.standard_normal((2, 512))),
    ]
    return np.concatenate(parts).astype(np.float32)


def single_super_block() -> np.ndarray:
    return normal(1, 256)[0]


def many_rows() -> np.ndarray:
    return normal(3001, 256, 0.05)


def three_d() -> np.ndarray:
    return normal(2 * 7, 512).reshape(2, 7, 512)


CASES = {
    "normal": normal,
    "bf16_rounded": bf16_rounded,
    "zero_sub_blocks": zero_sub_blocks,
    "zero_super_block": zero_super_block,
    "tiny": tiny,
    "huge": huge,
    "constant": constant,
    "on_grid": on_grid,
    "outliers": outliers,
    "mixed_rows": mixed_rows,
    "single_super_block": single_super_block,
    "many_rows": many_rows,
    "three_d": three_d,
}
