"""Vectors for the exactness tests: seeded random ones and lnmp-quant's edge cases."""

from __future__ import annotations

import numpy as np

SUBNORMAL = np.float32(1e-40)


def edge_vectors() -> dict[str, np.ndarray]:
    rng = np.random.default_rng(13)
    one_hot = np.zeros(64, np.float32)
    one_hot[17] = 0.75
    signed_zeros = np.array([0.0, -0.0, 0.5, -0.0, 0.0, 0.25], np.float32)
    return {
        "constant": np.full(33, 0.5, np.float32),
        "constant_zero": np.zeros(8, np.float32),
        "one_nonzero": one_hot,
        "one_negative": -one_hot,
        "all_negative": -np.abs(rng.standard_normal(77)).astype(np.float32) - 1.0,
        "huge": np.array([3.0e38, -1.0e37, 1.5e38, 2.0e37, 3.3e38], np.float32),
        "subnormal": (rng.standard_normal(40) * SUBNORMAL).astype(np.float32),
        "subnormal_and_normal": np.array([SUBNORMAL, -SUBNORMAL, 1e-38, 0.0, 1.0], np.float32),
        "signed_zeros": signed_zeros,
        "leading_negative_zero": np.array([-0.0, 0.0, 1.0, 2.0], np.float32),
        "single_value": np.array([0.7], np.float32),
        "ramp_on_half_steps": (np.arange(31, dtype=np.float32) / 30.0),
        "odd_dim": rng.standard_normal(9).astype(np.float32),
        "tiny_range": np.float32(1.0) + np.array([0, 1e-7, 2e-7], np.float32),
    }


def random_vectors() -> dict[str, np.ndarray]:
    rng = np.random.default_rng(7)
    return {
        f"normal_{dim}_x{scale:g}": (rng.standard_normal(dim) * scale).astype(np.float32)
        for dim in (1, 2, 3, 8, 15, 384, 513)
        for scale in (1e-3, 1.0, 1e4)
    } | {"uniform_512": rng.uniform(-1, 1, 512).astype(np.float32)}


ALL = edge_vectors() | random_vectors()
