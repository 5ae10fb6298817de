"""Branch-free integer minimum and maximum for the compiled kernels, and an index without
a wrap-around check.

Each is one compare and one select in the compiled code (Python's `min`/`max` compile to
branches), so that a loop reducing with them vectorises. The result has the type of the
first argument; the second is converted to it.
"""

from __future__ import annotations

import numpy as np
from numba import njit, types
from numba.extending import intrinsic


def _select(op: str, signed: bool):
    def typer(typingctx, a, b):
        if not (isinstance(a, types.Integer) and isinstance(b, types.Integer)):
            return None

        def codegen(context, builder, signature, args):
            x = args[0]
            y = context.cast(builder, args[1], signature.args[1], signature.args[0])
            compare = builder.icmp_signed if signed else builder.icmp_unsigned
            return builder.select(compare(op, x, y), x, y)

        return a(a, b), codegen

    return intrinsic(typer)


#: umax(a, b), umin(a, b): compared as unsigned; smax, smin: as signed.
umax = _select(">", False)
umin = _select("<", False)
smax = _select(">", True)
smin = _select("<", True)


@njit(cache=True, nogil=True, inline="always")
def uindex(i):  # pragma: no cover - compiled
    """An index known not to be negative, as unsigned: the compiled code then indexes with
    it directly (a signed index is first checked for a negative one to count from the end,
    a compare and a select at every access)."""
    return np.uint64(i)


@njit(cache=True, nogil=True, inline="always")
def max_magnitude_bits(bits, x0, n):  # pragma: no cover - compiled
    """The largest |x| of the float32 values bits[x0 : x0 + n] (given as uint32 bit
    patterns), as its bit pattern (an integer reduction, so the loop is vectorized); from
    0x7F800000 up, the run holds an infinity or a NaN."""
    top = np.uint32(0)
    for j in range(n):
        top = umax(top, bits[uindex(x0 + j)] & np.uint32(0x7FFFFFFF))
    return top
