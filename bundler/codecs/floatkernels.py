"""Compiled F16 and BF16 conversions of float32, byte-exact with ggml's portable ones.

- F16: round to nearest even, overflow to infinity, subnormals rounded, and every NaN
  becomes the quiet NaN 0x7E00 with its sign (`halfs.f32_to_f16_bits`, as ggml's
  `ggml_compute_fp32_to_fp16`); decoding widens exactly (NaN payloads kept).
- BF16: `(u + 0x7FFF + ((u >> 16) & 1)) >> 16` on the float32 bits `u`; a NaN becomes
  `(u >> 16) | 0x40` (quiet, top payload bits kept); decoding shifts back.

Each kernel converts elements [lo * STEP, hi * STEP) so that `kernels.split_run` can share
a call between threads. The loops run over slices from index 0, so the compiler knows no
index is negative and the loops vectorise (a loop from `lo * STEP` indexes through
negative-index wraparound, which compiles to gathers and scattered stores, 4x slower).
"""

from __future__ import annotations

import numpy as np
from numba import njit

from bundler.codecs.floats import STEP
from bundler.codecs.halfs import f32_to_f16_bits

_JIT = {"cache": True, "nogil": True, "error_model": "numpy"}


@njit(cache=True, nogil=True, inline="always")
def _part(a, lo, hi):
    """Elements [lo * STEP, hi * STEP) of flat array `a`."""
    return a[lo * STEP : min(hi * STEP, a.size)]


@njit(**_JIT)
def f16_encode(src, dst, lo, hi):
    """dst[i] = the half bits of float32 src[i]."""
    src, dst = _part(src, lo, hi), _part(dst, lo, hi)
    for i in range(src.size):
        dst[i] = f32_to_f16_bits(src[i])
    return 0


@njit(**_JIT)
def f16_decode(src, dst, table, lo, hi):
    """dst[i] = the float32 value of half bits src[i] (`table` is `halftable.HALF_TO_F32`)."""
    src, dst = _part(src, lo, hi), _part(dst, lo, hi)
    for i in range(src.size):
        dst[i] = table[src[i]]
    return 0


@njit(**_JIT)
def bf16_encode(src, dst, lo, hi):
    """dst[i] = the BF16 bits of float32 bits src[i]."""
    src, dst = _part(src, lo, hi), _part(dst, lo, hi)
    for i in range(src.size):
        u = src[i]
        rounded = (u + (np.uint32(0x7FFF) + ((u >> np.uint32(16)) & np.uint32(1)))) >> np.uint32(16)
        nan = (u & np.uint32(0x7FFFFFFF)) > np.uint32(0x7F800000)
        quiet = (u >> np.uint32(16)) | np.uint32(0x40)
        dst[i] = np.uint16(quiet if nan else rounded)
    return 0


@njit(**_JIT)
def bf16_decode(src, dst, lo, hi):
    """dst[i] = float32 bits of BF16 bits src[i]."""
    src, dst = _part(src, lo, hi), _part(dst, lo, hi)
    for i in range(src.size):
        dst[i] = np.uint32(src[i]) << np.uint32(16)
    return 0
