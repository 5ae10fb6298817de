"""The K-quant encoders: one compiled kernel per type, so that a conversion to one type
compiles that type's search only.

Each kernel encodes a range of super-blocks of the flattened rows (whole super-blocks are
contiguous; the caller runs ranges on several threads), and counts the super-blocks that
hold a NaN or infinity so that the registry can refuse them by position. The sub-blocks of
LANES // (256 / n) super-blocks (n values each) are searched side by side.

The kernels are not parallel loops of the compiler: a parallel loop adds two levels of
linked code that the compiler optimizes and emits again, doubling the compile time.
"""

from __future__ import annotations

import numpy as np
from numba import njit

from bundler.codecs.facts import BY_NAME
from bundler.codecs.halfs import f32_bits
from bundler.codecs.kquants import blocks
from bundler.codecs.kquants.common import (
    F0,
    F1,
    F127,
    JIT,
    KINDS,
    LANES,
    QK,
    max_abs_bits,
    nearest,
    nonfinite_blocks,
)
from bundler.codecs.kquants.workspace import gather, weigh, workspace

#: Values per sub-block of each type that searches its sub-blocks (all but Q8_K).
#: Sub-blocks searched side by side by the weighted encoders.
WEIGHTED_LANES = 4 * LANES
_SUB_BLOCK = {"q2_k": 16, "q3_k": 16, "q4_k": 32, "q5_k": 32, "q6_k": 16}


def super_block_encoder(name: str, weighted: bool = False):
    """The compiled encoder `(src, dst, table, qw, n_per_row, lo, hi) -> non-finite blocks`
    of K-quant `name`, encoding super-blocks lo .. hi-1 of `src` (rows of n_per_row values)
    into `dst`: ggml's reference quantizer, or, `weighted`, its `quantize_<type>` given
    `quant_weights` `qw` (one per column; the reference encoder ignores qw)."""
    kind = KINDS[name]
    n = _SUB_BLOCK[name]
    nsub = QK // n
    # the weighted searches with a second level (one lane per super-block: all but Q6_K's)
    # run more sub-blocks side by side, so that the second level has lanes to vectorise too
    lanes = WEIGHTED_LANES if weighted and kind != 6 else LANES
    group = lanes // nsub
    size = BY_NAME[name].type_size
    # sigma^2 of the weights: the mean of x^2 over the super-block, doubled but for Q2_K
    sigma_scale = np.float32(1.0 if kind == 2 else 2.0)

    @njit(**JIT)
    def encode(src, dst, table, qw, n_per_row, lo, hi):
        ws = workspace(n, lanes)
        top = workspace(nsub, group)  # the weighted second level: a lane per super-block
        for first in range(lo, hi, group):
            m = min(group, hi - first)
            gather(src, first, m, n, ws[0])
            if weighted:
                weigh(src, first, m, n, qw, n_per_row, sigma_scale, kind == 6, ws)
            if kind == 2 and weighted:
                blocks.scale_min_weighted_search(ws, top, m, 3, nsub)
            elif kind == 2:
                blocks.q2_k_search(ws)
            elif kind == 3 and weighted:
                blocks.q3_k_weighted_search(ws, top, m)
            elif kind == 3:
                blocks.q3_k_search(ws)
            elif kind == 4 and weighted:
                blocks.scale_min_weighted_search(ws, top, m, 15, nsub)
            elif kind == 4:
                blocks.k4_search(ws, 15, np.float32(-1.0), 20)
            elif kind == 5 and weighted:
                blocks.scale_min_weighted_search(ws, top, m, 31, nsub)
            elif kind == 5:
                blocks.k4_search(ws, 31, np.float32(-0.5), 15)
            else:
                blocks.q6_k_search(ws, weighted)
            for g in range(m):
                b = first + g
                x = src[b * QK : (b + 1) * QK]
                y = dst[b * size : (b + 1) * size]
                off = g * nsub
                if kind == 2 and weighted:
                    blocks.q2_k_weighted_finish(x, y, table, ws, top, off, g)
                elif kind == 2:
                    blocks.q2_k_finish(x, y, table, ws, off)
                elif kind == 3 and weighted:
                    blocks.q3_k_weighted_finish(x, y, table, ws, top, off, g)
                elif kind == 3:
                    blocks.q3_k_finish(x, y, table, ws, off)
                elif kind >= 4 and kind <= 5:
                    nmax = 15 if kind == 4 else 31
                    if weighted:
                        blocks.k4_weighted_finish(x, y, table, ws, top, off, g, nmax)
                    else:
                        blocks.k4_finish(x, y, table, ws, off, nmax)
                    if kind == 4:
                        blocks.q4_k_pack(y, ws[8])
                    else:
                        blocks.q5_k_pack(y, ws[8])
                else:
                    blocks.q6_k_finish(x, y, table, ws, off)
        return nonfinite_blocks(src, lo, hi, QK)

    return encode


Q8_K_BYTES = BY_NAME["q8_k"].type_size


@njit(**JIT)
def q8_k_encode(src, dst, table, lo, hi):
    """Q8_K of super-blocks lo .. hi-1: one float32 scale per super-block, int8 codes and
    their sums per 16 values."""
    bad = 0
    for b in range(lo, hi):
        x = src[b * QK : (b + 1) * QK]
        y = dst[b * Q8_K_BYTES : (b + 1) * Q8_K_BYTES]
        top = max_abs_bits(x)
        bad += 1 if top >= np.uint32(0x7F800000) else 0
        for i in range(Q8_K_BYTES):
            y[i] = 0
        if top == 0:
            continue
        vmax = F0
        for i in range(QK):  # the first value of largest magnitude, as the reference picks
            if f32_bits(x[i]) & np.uint32(0x7FFFFFFF) == top:
                vmax = x[i]
                break
        iscale = -F127 / vmax
        for j in range(16):
            total = 0
            for i in range(16):
                q = np.int8(min(127, nearest(iscale * x[16 * j + i])) & 0xFF)
                y[4 + 16 * j + i] = np.uint8(q & 0xFF)
                total += np.int32(q)
            y[260 + 2 * j] = np.uint8(total & 0xFF)
            y[261 + 2 * j] = np.uint8((total >> 8) & 0xFF)
        bits = f32_bits(np.float32(F1 / iscale))
        for k in range(4):
            y[k] = np.uint8((bits >> np.uint32(8 * k)) & np.uint32(0xFF))
    return bad
