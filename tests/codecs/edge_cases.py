"""Inputs that exercise the rounding corners of the block codecs (reference notes' list)."""

from __future__ import annotations

import numpy as np

SEED = 1234
#: Codecs whose ggml quantizer searches a lattice and aborts the process where its float32
#: arithmetic overflows (IQ3 from values of about 7e12, IQ1 near the float32 maximum);
#: bundler refuses those blocks instead.
LATTICE = ("iq3_xxs", "iq3_s", "iq2_xxs", "iq2_xs", "iq2_s", "iq1_s", "iq1_m")
#: Magnitudes below this (2^40, about 1.1e12) never overflow the lattice search.
LATTICE_SAFE = 2.0**40


def c_safe(name: str, x: np.ndarray) -> np.ndarray:
    """`x` as rows, without (for the lattice codecs) the rows the C library would abort on."""
    rows = np.asarray(x).reshape(-1, np.shape(x)[-1])
    if name not in LATTICE:
        return rows
    return rows[np.abs(rows).max(axis=1, initial=0.0) < LATTICE_SAFE]


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


def _with_pairs(rows: np.ndarray, pairs: list[tuple[float, float]]) -> np.ndarray:
    """`rows` with elements 3 and 17 of every block set to one (first, second) pair per row."""
    for row, (first, second) in zip(rows, pairs, strict=True):
        row[3::32], row[17::32] = first, second
    return rows


def tied_magnitudes(cols: int = 256) -> np.ndarray:
    """Blocks whose largest magnitude is held twice with both signs (+2 then -2, and -2
    then +2): the first one sets the sign of the symmetric types' scale."""
    x = np.random.default_rng(SEED + 3).uniform(-1, 1, (2, cols)).astype(np.float32)
    return _with_pairs(x, [(2.0, -2.0), (-2.0, 2.0)])


def signed_zero_extremes(cols: int = 256) -> np.ndarray:
    """Blocks whose minimum (rows 0-1, values in [1, 2]) or maximum (rows 2-3, values in
    [-2, -1]) is zero, held as -0.0 then +0.0 or +0.0 then -0.0: the C reference keeps the
    first, so the stored minimum of Q4_1/Q5_1 carries its sign."""
    mag = np.random.default_rng(SEED + 4).uniform(1, 2, (4, cols)).astype(np.float32)
    x = mag * np.array([[1], [1], [-1], [-1]], np.float32)
    return _with_pairs(x, [(-0.0, 0.0), (0.0, -0.0)] * 2)


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


def overflowing_inverses(cols: int = 256) -> np.ndarray:
    """Magnitudes whose float32 scale is subnormal, so that 1/d overflows to infinity and
    every code is the C conversion of an infinite product: constant blocks of the least
    normal float32 and of subnormals, either sign, and random blocks near 1e-38..1e-41."""
    rng = np.random.default_rng(SEED + 3)
    tiny = np.float32(np.finfo(np.float32).tiny)
    constant = np.array([[tiny], [-tiny], [1e-39], [-1e-40]], np.float32) * np.ones(cols)
    scales = np.array([[1e-38], [1e-39], [1e-40], [1e-41]])
    return np.concatenate([constant, rng.standard_normal((4, cols)) * scales]).astype(np.float32)


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
    "tied_magnitudes": tied_magnitudes,
    "huge_scales": huge_scales,
    "subnormal_scales": subnormal_scales,
    "overflowing_inverses": overflowing_inverses,
    "constant_blocks": constant_blocks,
    "single_block": single_block,
    "three_d": three_d,
}
