"""IEEE binary16 conversions for the compiled kernels.

`f32_to_f16_bits` rounds to nearest even, overflows to infinity and turns NaN into the
quiet NaN 0x7E00 (sign kept), like ggml's portable `ggml_compute_fp32_to_fp16`. It works
with float arithmetic: scaling by 2^112 then 2^-110 makes the FPU round the mantissa to
half precision for normals and subnormals alike. `halftable.HALF_TO_F32` widens exactly.
"""

from __future__ import annotations

import numpy as np
from llvmlite import ir
from numba import njit, types
from numba.extending import intrinsic

_SCALE_TO_INF = np.float32(2.0**112)
_SCALE_TO_ZERO = np.float32(2.0**-110)


@intrinsic
def f32_bits(typingctx, x):
    """The bit pattern of a float32 as uint32 (a register bitcast)."""

    def codegen(context, builder, signature, args):
        return builder.bitcast(args[0], ir.IntType(32))

    return types.uint32(types.float32), codegen


@intrinsic
def f32_from_bits(typingctx, u):
    """The float32 whose bit pattern is the uint32 `u`."""

    def codegen(context, builder, signature, args):
        return builder.bitcast(args[0], ir.FloatType())

    return types.float32(types.uint32), codegen


@njit(cache=True, nogil=True, inline="always")
def f32_to_f16_bits(f):
    """Half bit pattern (uint16) of float32 `f`, round to nearest even (branch-free, so
    that loops over it vectorize)."""
    f = np.float32(f)
    base = (np.float32(abs(f)) * _SCALE_TO_INF) * _SCALE_TO_ZERO
    w = f32_bits(f)
    shl1_w = np.uint32(w + w)
    sign = w & np.uint32(0x80000000)
    bias = max(shl1_w & np.uint32(0xFF000000), np.uint32(0x71000000))
    base = f32_from_bits(np.uint32((bias >> np.uint32(1)) + np.uint32(0x07800000))) + base
    bits = f32_bits(base)
    nonsign = ((bits >> np.uint32(13)) & np.uint32(0x7C00)) + (bits & np.uint32(0x0FFF))
    nonsign = np.uint32(0x7E00) if shl1_w > np.uint32(0xFF000000) else nonsign
    return np.uint16((sign >> np.uint32(16)) | nonsign)


@njit(cache=True, nogil=True, inline="always")
def put_half(out, at, f):
    """Store the half of float32 `f` little-endian at out[at], out[at + 1]."""
    h = f32_to_f16_bits(f)
    out[at] = np.uint8(h & np.uint16(0xFF))
    out[at + 1] = np.uint8(h >> np.uint16(8))


@njit(cache=True, nogil=True, inline="always")
def get_half(raw, at, table):
    """The float32 value of the little-endian half at raw[at] (`table` is `HALF_TO_F32`)."""
    return table[np.int64(raw[at]) | (np.int64(raw[at + 1]) << 8)]
