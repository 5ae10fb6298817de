"""Compiled per-row loops of the vector schemes, in float32 exactly as formats/vectors.md states.

Every float constant is a float32 so that no operation widens to float64; numba without
fastmath neither reorders sums nor fuses a multiply and an add, so each float operation
rounds once, in the order written. Loops are written so that the compiler can vectorize
them (integer reductions, no branches in the inner loops); rows are independent and run on
one thread.
"""

from __future__ import annotations

import numpy as np
from llvmlite import ir
from numba import njit, types
from numba.extending import intrinsic

from bundler.codecs.halfs import f32_from_bits
from bundler.codecs.vectors.simd import (
    CODE_WIDTH,
    HALF_WIDTH,
    halves_16,
    pack_at_least_8,
    pack_at_least_64,
    qint4_nibbles_16,
    qint8_codes_16,
    row_sums_8,
    row_sums_16,
    unpack_signs_8,
    unpack_signs_64,
)

_F0 = np.float32(0.0)
_F1 = np.float32(1.0)
_HALF = np.float32(0.5)
_TINY = np.float32(1e-10)
_F32_MAX = np.float32(np.finfo(np.float32).max)
_I8_LEVELS = np.float32(255.0)
_I8_OFFSET = np.float32(128.0)
_I8_TOP = np.float32(127.0)
_I4_LEVELS = np.float32(15.0)
_I32_MIN = np.int32(-(2**31))
_I32_MAX = np.int32(2**31 - 1)
_U0 = np.uint32(0)
_SIGN = np.uint32(0x80000000)
_POS_INF = np.int32(0x7F800000)
_NEG_INF = np.uint32(0xFF800000)
#: The encoders' two passes (range or sum, then codes) go over this many rows at a time,
#: so that the second reads them from the cache, not from memory.
_BLOCK_ROWS = 16


@njit(cache=True, nogil=True, inline="always")
def _scale_and_inverse(lo, hi, levels):
    """lnmp-quant's step: (hi - lo) / levels, 1 when the range is below 1e-10."""
    span = hi - lo
    scale = _F1 if abs(span) < _TINY else span / levels
    inv = _F1 / scale if abs(scale) > _TINY else _F1
    return scale, inv


@njit(cache=True, nogil=True)
def row_ranges(x, low, high, bad):
    """Each row's min and max, and whether it holds a NaN or infinity (bad = 1).

    Works on the bit patterns with three integer reductions: signed max, signed min and
    unsigned max. Non-negative floats order like their bits, negative ones in reverse, so
    max = signed max when some value is >= +0 else signed min, and min = unsigned max when
    some value is negative else signed min. The min keeps lnmp-quant's choice among equal
    minima (the first one): of -0.0 and 0.0 the first in the row. A finite row whose max -
    min overflows float32 is flagged 2. Returns how many rows are flagged.
    """
    count = 0
    bits = x.view(np.int32)
    ubits = x.view(np.uint32)
    for i in range(x.shape[0]):
        row = bits[i]
        urow = ubits[i]
        smax = _I32_MIN
        smin = _I32_MAX
        umax = _U0
        for j in range(row.shape[0]):
            smax = max(smax, row[j])
            smin = min(smin, row[j])
            umax = max(umax, urow[j])
        bad[i] = smax >= _POS_INF or umax >= _NEG_INF
        hi = smax if smax >= 0 else smin
        lo = np.int32(umax) if umax >= _SIGN else smin
        if (lo & _I32_MAX) == 0:  # a zero min: the first zero's sign
            for j in range(row.shape[0]):
                if (row[j] & _I32_MAX) == 0:
                    lo = row[j]
                    break
        high[i] = f32_from_bits(np.uint32(hi))
        low[i] = f32_from_bits(np.uint32(lo))
        if not bad[i] and abs(high[i] - low[i]) > _F32_MAX:
            bad[i] = 2
        count += bad[i] != 0
    return count


@njit(cache=True, nogil=True)
def qint8_encode(x, low, high, codes, scale):
    """codes[i, j] = clamp(trunc((x[i, j] - min_i) * (1 / scale_i)) - 128, -128, 127).

    x is finite and max - min does not overflow, so the product is finite and truncating
    it is Rust's `as i32`.
    """
    dim = x.shape[1]
    for i in range(x.shape[0]):
        row = x[i]
        lo = low[i]
        s, inv = _scale_and_inverse(lo, high[i], _I8_LEVELS)
        scale[i] = s
        col = 0
        while col + CODE_WIDTH <= dim:
            qint8_codes_16(x, i, col, lo, inv, codes)
            col += CODE_WIDTH
        out = codes[i]
        for j in range(col, dim):
            t = np.float32(np.int32((row[j] - lo) * inv)) - _I8_OFFSET  # whole numbers: exact
            out[j] = np.int32(min(max(t, -_I8_OFFSET), _I8_TOP))


@njit(cache=True, nogil=True, inline="always")
def _finite(scale, low):
    """Whether every scale and min is finite."""
    ok = True
    for i in range(scale.shape[0]):
        ok &= abs(scale[i]) <= _F32_MAX and abs(low[i]) <= _F32_MAX  # NaN compares false
    return ok


@njit(cache=True, nogil=True)
def qint8_decode(codes, scale, low, out):
    """out[i, j] = float32(codes[i, j] + 128) * scale_i + min_i (two roundings). Returns
    False, writing nothing, when a scale or min is not finite."""
    if not _finite(scale, low):
        return False
    for i in range(codes.shape[0]):
        s = scale[i]
        lo = low[i]
        c = codes[i]
        o = out[i]
        for j in range(c.shape[0]):
            # code + 128 in float32 (whole numbers, exact; 32-bit lanes)
            o[j] = (np.float32(np.int8(c[j])) + _I8_OFFSET) * s + lo
    return True


@njit(cache=True, nogil=True, inline="always")
def _nibble(v, lo, inv):
    """round((v - min) * inv), ties away from zero (Rust's f32::round), clamped to 0..15."""
    n = (v - lo) * inv  # never negative, at most about 15
    t = np.float32(np.int32(n))  # truncation
    t += _F1 if n - t >= _HALF else _F0  # n - t is exact
    return np.uint8(np.int32(min(max(t, _F0), _I4_LEVELS)))


@njit(cache=True, nogil=True)
def qint4_encode(x, low, high, packed, scale):
    """Nibbles round((x - min) * (1 / scale)), ties away from zero, clamped to 0..15; the
    first value of a pair in the high nibble, a missing last value as 0."""
    dim = x.shape[1]
    for i in range(x.shape[0]):
        row = x[i]
        lo = low[i]
        s, inv = _scale_and_inverse(lo, high[i], _I4_LEVELS)
        scale[i] = s
        col = 0
        while col + CODE_WIDTH <= dim:
            qint4_nibbles_16(x, i, col, lo, inv, packed)
            col += CODE_WIDTH
        for j in range(col, dim, 2):
            second = _nibble(row[j + 1], lo, inv) if j + 1 < dim else np.uint8(0)
            packed[i, j >> 1] = (_nibble(row[j], lo, inv) << np.uint8(4)) | second


@njit(cache=True, nogil=True)
def qint4_decode(packed, scale, low, out):
    """out = float32(nibble) * scale + min (two roundings). Returns False, writing nothing,
    when a scale or min is not finite."""
    if not _finite(scale, low):
        return False
    dim = out.shape[1]
    nibbles = np.empty(2 * packed.shape[1], np.uint8)
    pairs = nibbles.view(np.uint16)
    for i in range(packed.shape[0]):
        s = scale[i]
        lo = low[i]
        p = packed[i]
        for b in range(p.shape[0]):
            v = np.uint16(p[b])
            pairs[b] = (v >> np.uint16(4)) | ((v & np.uint16(15)) << np.uint16(8))
        o = out[i]
        for j in range(dim):
            o[j] = np.float32(nibbles[j]) * s + lo
    return True


@njit(cache=True, nogil=True)
def row_sums(x, first, last, total):
    """total[i] = row i's float32 sum, strictly left to right (Rust's `iter().sum::<f32>()`),
    for rows first..last: 16 or 8 rows at a time are summed side by side in vector lanes,
    one lane per row, so that their additions share instructions without any row's order
    changing."""
    dim = x.shape[1]
    cols = dim - dim % 8
    i = first
    while i + 16 <= last:
        row_sums_16(x, i, cols, total)
        i += 16
    while i + 8 <= last:
        row_sums_8(x, i, cols, total)
        i += 8
    for r in range(i, last):
        t = _F0
        for j in range(cols):
            t += x[r, j]
        total[r] = t
    for r in range(first, last):
        t = total[r]
        for j in range(cols, dim):
            t += x[r, j]
        total[r] = t


@njit(cache=True, nogil=True)
def binary_encode(x, packed, mean):
    """Bit j % 8 (least significant first) of byte j // 8 is set when x[j] >= the row's
    mean, the mean being the left-to-right float32 sum divided by float32(dim). Returns how
    many means are not finite (a NaN or infinity, or a sum that overflows)."""
    rows, dim = x.shape
    n = np.float32(dim)
    count = 0
    for first in range(0, rows, _BLOCK_ROWS):
        last = min(first + _BLOCK_ROWS, rows)
        row_sums(x, first, last, mean)  # then the rows' signs while they are in cache
        for i in range(first, last):
            m = mean[i] / n
            mean[i] = m
            count += not abs(m) <= _F32_MAX
            col = 0
            while col + 64 <= dim:
                pack_at_least_64(x, i, col, m, packed, col >> 3)
                col += 64
            while col + 8 <= dim:
                pack_at_least_8(x, i, col, m, packed, col >> 3)
                col += 8
            if col < dim:
                last_byte = np.uint8(0)
                for k in range(dim - col):
                    last_byte |= np.uint8(x[i, col + k] >= m) << np.uint8(k)
                packed[i, col >> 3] = last_byte
    return count


@njit(cache=True, nogil=True)
def binary_decode(packed, out):
    """+1 for a set bit, -1 for a clear one."""
    rows, dim = out.shape
    for i in range(rows):
        col = 0
        while col + 64 <= dim:
            unpack_signs_64(packed, i, col >> 3, out, col)
            col += 64
        while col + 8 <= dim:
            unpack_signs_8(packed, i, col >> 3, out, col)
            col += 8
        if col < dim:
            last = packed[i, col >> 3]
            for k in range(dim - col):
                out[i, col + k] = _F1 if (last >> np.uint8(k)) & np.uint8(1) else -_F1


@intrinsic
def _fptrunc_half(typingctx, x):
    """The binary16 bits of float32 x, IEEE round to nearest even (LLVM's fptrunc: the
    F16C conversion where the processor has it, vectorized)."""

    def codegen(context, builder, signature, args):
        return builder.bitcast(builder.fptrunc(args[0], ir.HalfType()), ir.IntType(16))

    return types.uint16(types.float32), codegen


@intrinsic
def _fpext_half(typingctx, h):
    """The float32 of binary16 bits h, exact (LLVM's fpext)."""

    def codegen(context, builder, signature, args):
        return builder.fpext(builder.bitcast(args[0], ir.HalfType()), ir.FloatType())

    return types.float32(types.uint16), codegen


@njit(cache=True, nogil=True, inline="always")
def _half(w):
    """IEEE binary16 bits of the float32 with bits w, round to nearest even, overflow to
    infinity; a NaN becomes the quiet NaN 0x7E00 with its sign."""
    h = _fptrunc_half(f32_from_bits(w))
    nan = np.uint16((w >> np.uint32(16)) & np.uint32(0x8000)) | np.uint16(0x7E00)
    return nan if (w & np.uint32(0x7FFFFFFF)) > np.uint32(0x7F800000) else h


@njit(cache=True, nogil=True)
def f16_quantize(x, halves, special):
    """halves = the binary16 bits of every value (as bundler.codecs.halfs.f32_to_f16_bits);
    special[i] = 1 when row i holds an infinity or NaN half. Returns how many rows do."""
    rows, dim = x.shape
    count = 0
    for i in range(rows):
        found = 0
        col = 0
        while col + HALF_WIDTH <= dim:
            found |= halves_16(x, i, col, halves)
            col += HALF_WIDTH
        words = x[i].view(np.uint32)
        for j in range(col, dim):
            h = _half(words[j])
            halves[i, j] = h
            found |= (h & np.uint16(0x7C00)) == np.uint16(0x7C00)
        special[i] = found != 0
        count += found != 0
    return count


@njit(cache=True, nogil=True)
def f16_decode(halves, out):
    """float32 of binary16 bits, exact (the processor's conversion): a signalling NaN half,
    which quantizing never produces, comes back as the quiet NaN with the same payload."""
    for i in range(halves.shape[0]):
        h = halves[i]
        o = out[i]
        for j in range(h.shape[0]):
            o[j] = _fpext_half(h[j])


@njit(cache=True, nogil=True)
def qint8_quantize(x, low, high, bad, codes, scale):
    """row_ranges then qint8_encode, _BLOCK_ROWS rows at a time (the second pass reads them
    from the cache); rows flagged bad hold garbage codes. Returns how many are flagged."""
    count = 0
    for a in range(0, x.shape[0], _BLOCK_ROWS):
        b = min(a + _BLOCK_ROWS, x.shape[0])
        count += row_ranges(x[a:b], low[a:b], high[a:b], bad[a:b])
        qint8_encode(x[a:b], low[a:b], high[a:b], codes[a:b], scale[a:b])
    return count


@njit(cache=True, nogil=True)
def qint4_quantize(x, low, high, bad, packed, scale):
    """row_ranges then qint4_encode, _BLOCK_ROWS rows at a time (the second pass reads them
    from the cache); rows flagged bad hold garbage codes. Returns how many are flagged."""
    count = 0
    for a in range(0, x.shape[0], _BLOCK_ROWS):
        b = min(a + _BLOCK_ROWS, x.shape[0])
        count += row_ranges(x[a:b], low[a:b], high[a:b], bad[a:b])
        qint4_encode(x[a:b], low[a:b], high[a:b], packed[a:b], scale[a:b])
    return count
