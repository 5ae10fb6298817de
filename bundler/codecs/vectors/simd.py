"""Vector instructions for the vector schemes' kernels, written as LLVM IR the compiler
inlines: sums of eight rows side by side (a transposed tile per step, so that each row's
sum keeps its strict left-to-right order while eight rows share one instruction), signs
compared and packed into bits, bits unpacked to ±1, and floats converted to halves.

Every operation is IEEE float32 in the order written: no reassociation, no fused
multiply-add (the IR carries no fast-math flags).
"""

from __future__ import annotations

from llvmlite import ir
from numba import types
from numba.extending import intrinsic

_F32 = ir.FloatType()
_I1 = ir.IntType(1)
_I16 = ir.IntType(16)
_I64 = ir.IntType(64)


def _int(bits: int) -> ir.IntType:
    return ir.IntType(bits)


def _vec(element: ir.Type, n: int) -> ir.VectorType:
    return ir.VectorType(element, n)


def _ptr(context, builder, arrty, arr, row, col):
    """Pointer to element (row, col) of a C-contiguous 2-D array."""
    a = context.make_array(arrty)(context, builder, arr)
    ncols = builder.extract_value(a.shape, 1)
    return builder.gep(a.data, [builder.add(builder.mul(row, ncols), col)])


def _load(builder, ptr, vty):
    return builder.load(builder.bitcast(ptr, vty.as_pointer()), align=1)


def _store(builder, value, ptr):
    builder.store(value, builder.bitcast(ptr, value.type.as_pointer()), align=1)


def _splat(builder, value, n):
    v = builder.insert_element(ir.Constant(_vec(value.type, n), ir.Undefined), value, _I64(0))
    return builder.shuffle_vector(v, v, ir.Constant(_vec(ir.IntType(32), n), [0] * n))


def _shuffle(builder, a, b, lanes):
    return builder.shuffle_vector(a, b, ir.Constant(_vec(ir.IntType(32), len(lanes)), lanes))


def _columns(builder, rows):
    """The eight columns (each as 8 lanes, one per row) of eight 8-float row chunks given
    as 4-float halves: rows[r] = (values 0..3, values 4..7) of row r."""
    cols = []
    for half in (0, 1):
        # lane group 0 holds rows 0..3, lane group 1 rows 4..7 (in-lane 4x4 transposes)
        t = [_shuffle(builder, rows[r][half], rows[r + 4][half], list(range(8))) for r in range(4)]
        a0 = _shuffle(builder, t[0], t[1], [0, 8, 1, 9, 4, 12, 5, 13])
        a1 = _shuffle(builder, t[0], t[1], [2, 10, 3, 11, 6, 14, 7, 15])
        a2 = _shuffle(builder, t[2], t[3], [0, 8, 1, 9, 4, 12, 5, 13])
        a3 = _shuffle(builder, t[2], t[3], [2, 10, 3, 11, 6, 14, 7, 15])
        for lo, hi in ((a0, a2), (a1, a3)):
            cols.append(_shuffle(builder, lo, hi, [0, 1, 8, 9, 4, 5, 12, 13]))
            cols.append(_shuffle(builder, lo, hi, [2, 3, 10, 11, 6, 7, 14, 15]))
    return cols


def _row_sums_intrinsic(groups: int):
    """An intrinsic (x, first, cols, total): total[first + r] = the float32 sum of
    x[first + r, 0:cols], strictly left to right, for r < 8 * groups; cols a multiple of 8."""

    @intrinsic
    def row_sums(typingctx, x, first, cols, total):
        sig = types.void(x, types.intp, types.intp, total)

        def codegen(context, builder, signature, args):
            xa, first_, cols_, totals = args
            v4, v8 = _vec(_F32, 4), _vec(_F32, 8)
            zero = ir.Constant(v8, [0.0] * 8)
            bases = [
                [_ptr(context, builder, x, xa, builder.add(first_, _I64(8 * g + r)), _I64(0))
                 for r in range(8)]
                for g in range(groups)
            ]  # fmt: skip
            entry = builder.block
            head = builder.append_basic_block("sum.head")
            body = builder.append_basic_block("sum.body")
            done = builder.append_basic_block("sum.done")
            builder.branch(head)
            builder.position_at_end(head)
            j = builder.phi(_I64)
            acc = [builder.phi(v8) for _ in range(groups)]
            j.add_incoming(_I64(0), entry)
            for a in acc:
                a.add_incoming(zero, entry)
            builder.cbranch(builder.icmp_signed("<", j, cols_), body, done)
            builder.position_at_end(body)
            new = []
            for g in range(groups):
                rows = [
                    (
                        _load(builder, builder.gep(p, [j]), v4),
                        _load(builder, builder.gep(p, [builder.add(j, _I64(4))]), v4),
                    )
                    for p in bases[g]
                ]
                s = acc[g]
                for col in _columns(builder, rows):
                    s = builder.fadd(s, col)
                new.append(s)
            for a, s in zip(acc, new, strict=True):
                a.add_incoming(s, builder.block)
            j.add_incoming(builder.add(j, _I64(8)), builder.block)
            builder.branch(head)
            builder.position_at_end(done)
            out = context.make_array(total)(context, builder, totals)
            for g, a in enumerate(acc):
                _store(builder, a, builder.gep(out.data, [builder.add(first_, _I64(8 * g))]))
            return context.get_dummy_value()

        return sig, codegen

    return row_sums


#: Sums of 16 and of 8 rows at a time (two independent chains hide the adds' latency).
row_sums_16 = _row_sums_intrinsic(2)
row_sums_8 = _row_sums_intrinsic(1)


def _pack_at_least_intrinsic(width: int):
    """An intrinsic (x, row, col, m, packed, byte): bit k (least significant first) of the
    width // 8 bytes at packed[row, byte:] is x[row, col + k] >= m."""

    @intrinsic
    def pack_at_least(typingctx, x, row, col, m, packed, byte):
        sig = types.void(x, types.intp, types.intp, types.float32, packed, types.intp)

        def codegen(context, builder, signature, args):
            xa, row_, col_, m_, pa, byte_ = args
            values = _load(builder, _ptr(context, builder, x, xa, row_, col_), _vec(_F32, width))
            bits = builder.fcmp_ordered(">=", values, _splat(builder, m_, width))
            word = builder.bitcast(bits, ir.IntType(width))
            _store(builder, word, _ptr(context, builder, packed, pa, row_, byte_))
            return context.get_dummy_value()

        return sig, codegen

    return pack_at_least


pack_at_least_64 = _pack_at_least_intrinsic(64)
pack_at_least_8 = _pack_at_least_intrinsic(8)


def _unpack_signs_intrinsic(width: int):
    """An intrinsic (packed, row, byte, out, col): out[row, col + k] = +1 when bit k (least
    significant first) of the width // 8 bytes at packed[row, byte:] is set, else -1."""

    @intrinsic
    def unpack_signs(typingctx, packed, row, byte, out, col):
        sig = types.void(packed, types.intp, types.intp, out, types.intp)

        def codegen(context, builder, signature, args):
            pa, row_, byte_, oa, col_ = args
            word = _load(builder, _ptr(context, builder, packed, pa, row_, byte_), _int(width))
            bits = builder.bitcast(word, _vec(_I1, width))
            plus = ir.Constant(_vec(_F32, width), [1.0] * width)
            minus = ir.Constant(_vec(_F32, width), [-1.0] * width)
            signs = builder.select(bits, plus, minus)
            _store(builder, signs, _ptr(context, builder, out, oa, row_, col_))
            return context.get_dummy_value()

        return sig, codegen

    return unpack_signs


unpack_signs_64 = _unpack_signs_intrinsic(64)
unpack_signs_8 = _unpack_signs_intrinsic(8)

#: Half conversions done 16 values at a time.
HALF_WIDTH = 16


@intrinsic
def halves_16(typingctx, x, row, col, out):
    """(x, row, col, out) -> int: out[row, col:col + 16] = the binary16 bits of x[row, col:col
    + 16], IEEE round to nearest even, a NaN as the quiet NaN 0x7E00 with its sign; returns
    a mask whose bit k is set when half k has an all-ones exponent (infinity or NaN)."""
    sig = types.int64(x, types.intp, types.intp, out)

    def codegen(context, builder, signature, args):
        xa, row_, col_, oa = args
        n = HALF_WIDTH
        values = _load(builder, _ptr(context, builder, x, xa, row_, col_), _vec(_F32, n))
        halves = builder.bitcast(builder.fptrunc(values, _vec(ir.HalfType(), n)), _vec(_I16, n))
        words = builder.bitcast(values, _vec(ir.IntType(32), n))
        top = builder.trunc(builder.lshr(words, _splat(builder, _int(32)(16), n)), _vec(_I16, n))
        sign = builder.and_(top, _splat(builder, _I16(0x8000), n))
        nan = builder.or_(sign, _splat(builder, _I16(0x7E00), n))
        is_nan = builder.fcmp_unordered("uno", values, values)
        halves = builder.select(is_nan, nan, halves)
        _store(builder, halves, _ptr(context, builder, out, oa, row_, col_))
        exponent = _splat(builder, _I16(0x7C00), n)
        special = builder.icmp_unsigned("==", builder.and_(halves, exponent), exponent)
        return builder.zext(builder.bitcast(special, ir.IntType(n)), _I64)

    return sig, codegen


def _affine(builder, context, x, xa, row, col, low, inv, n):
    """(x[row, col:col + n] - low) * inv, in float32."""
    values = _load(builder, _ptr(context, builder, x, xa, row, col), _vec(_F32, n))
    return builder.fmul(builder.fsub(values, _splat(builder, low, n)), _splat(builder, inv, n))


def _clamp(builder, v, lo, hi, n):
    """Each signed 32-bit lane of v clamped to lo..hi."""
    low, high = _splat(builder, _int(32)(lo), n), _splat(builder, _int(32)(hi), n)
    v = builder.select(builder.icmp_signed("<", v, low), low, v)
    return builder.select(builder.icmp_signed(">", v, high), high, v)


#: QInt8 and QInt4 codes computed this many values at a time.
CODE_WIDTH = 16


@intrinsic
def qint8_codes_16(typingctx, x, row, col, low, inv, codes):
    """(x, row, col, low, inv, codes): codes[row, col:col + 16] = clamp(trunc((x - low) *
    inv) - 128, -128, 127) for the 16 values x[row, col:col + 16] (finite products)."""
    sig = types.void(x, types.intp, types.intp, types.float32, types.float32, codes)

    def codegen(context, builder, signature, args):
        xa, row_, col_, low_, inv_, ca = args
        n = CODE_WIDTH
        t = builder.fptosi(
            _affine(builder, context, x, xa, row_, col_, low_, inv_, n), _vec(_int(32), n)
        )
        q = _clamp(builder, builder.sub(t, _splat(builder, _int(32)(128), n)), -128, 127, n)
        _store(
            builder,
            builder.trunc(q, _vec(_int(8), n)),
            _ptr(context, builder, codes, ca, row_, col_),
        )
        return context.get_dummy_value()

    return sig, codegen


@intrinsic
def qint4_nibbles_16(typingctx, x, row, col, low, inv, packed):
    """(x, row, col, low, inv, packed): the 8 bytes at packed[row, col // 2:] from the 16
    values x[row, col:col + 16]: nibble round((x - low) * inv) (ties away from zero, as
    trunc + (remainder >= 0.5)) clamped to 0..15, the first of each pair in the high half."""
    sig = types.void(x, types.intp, types.intp, types.float32, types.float32, packed)

    def codegen(context, builder, signature, args):
        xa, row_, col_, low_, inv_, pa = args
        n = CODE_WIDTH
        i32 = _vec(_int(32), n)
        v = _affine(builder, context, x, xa, row_, col_, low_, inv_, n)
        t = builder.fptosi(v, i32)
        rest = builder.fsub(v, builder.sitofp(t, _vec(_F32, n)))  # exact
        up = builder.fcmp_ordered(">=", rest, _splat(builder, _F32(0.5), n))
        q = _clamp(builder, builder.add(t, builder.zext(up, i32)), 0, 15, n)
        # lane pairs as 64-bit words: value 2k in the low half, 2k + 1 in the high half
        words = builder.bitcast(q, _vec(_I64, n // 2))
        high = builder.shl(words, _splat(builder, _I64(4), n // 2))
        pairs = builder.or_(high, builder.lshr(words, _splat(builder, _I64(32), n // 2)))
        byte = builder.lshr(col_, _I64(1))
        _store(
            builder,
            builder.trunc(pairs, _vec(_int(8), n // 2)),
            _ptr(context, builder, packed, pa, row_, byte),
        )
        return context.get_dummy_value()

    return sig, codegen
