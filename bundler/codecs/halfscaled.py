"""The block loop of the codecs whose block is codes and one half scale, none of them
weighted: Q1_0 and Q2_0 (their blocks in lowbit.py), TQ1_0 and TQ2_0 (ternary.py). Each
type's kernel is compiled with the type as a constant, so only its own block functions
remain in it (the registry's table of them: `halfscaled_table`)."""

from __future__ import annotations

import functools

import numpy as np
from numba import njit

from bundler.codecs.facts import BY_NAME
from bundler.codecs.halfs import f32_bits, f32_from_bits, get_half
from bundler.codecs.kquants.common import JIT, nonfinite
from bundler.codecs.lowbit import decode_q1, decode_q2, encode_q1, encode_q2
from bundler.codecs.ternary import decode_tq1, decode_tq2, encode_tq1, encode_tq2


@functools.cache
def _pair(name: str) -> tuple:
    """The compiled encoder and decoder of one codec of the loop."""
    facts = BY_NAME[name]
    qk, size = facts.block_size, facts.type_size
    ternary, wide = name.startswith("tq"), name.endswith("2_0")  # TQ1_0/TQ2_0; Q2_0/TQ2_0
    scale_at = facts.scale_fields[0].offset  # the half d

    @njit(**JIT)
    def encode(src, dst, qw, n, lo, hi):
        """Blocks lo .. hi-1 of the flattened rows (importance weights `qw` ignored, as
        ggml's reference quantizers ignore them); returns the count with NaN/inf."""
        bad = 0
        for b in range(lo, hi):
            x, y = src[b * qk : (b + 1) * qk], dst[b * size : (b + 1) * size]
            bad += nonfinite(x)
            if ternary:
                encode_tq2(x, y) if wide else encode_tq1(x, y)
            else:
                encode_q2(x, y) if wide else encode_q1(x, y)
        return bad

    @njit(**JIT)
    def decode(raw, out, table, w, lo, hi):
        """Blocks lo .. hi-1 to float32 (`w`: the ternary blocks' group width at run time)."""
        for b in range(lo, hi):
            y, o = raw[b * size : (b + 1) * size], out[b * qk : (b + 1) * qk]
            d = get_half(y, scale_at, table)
            if d != d:  # ggml's half conversion quiets a signalling NaN; the table does not
                d = f32_from_bits(f32_bits(d) | np.uint32(0x400000))
            if ternary:
                decode_tq2(y, d, o, w) if wide else decode_tq1(y, d, o, w)
            else:
                decode_q2(y, d, o) if wide else decode_q1(y, d, o)

    return encode, decode


def encoder(name: str):
    """The compiled encoder `(src, dst, qw, n, lo, hi)` of codec `name`."""
    return _pair(name)[0]


def decoder(name: str):
    """The compiled decoder `(raw, out, table, w, lo, hi)` of codec `name`."""
    return _pair(name)[1]
