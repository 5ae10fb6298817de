"""What the lattice encoders (IQ3, IQ2, IQ1) do alike for every super-block of 256 values."""

from __future__ import annotations

import numpy as np
from numba import njit

from bundler.codecs.kquants.common import F0, JIT, nonfinite

QK = 256
F2 = np.float32(2.0)
F_QK = np.float32(QK)
FLT_MAX = np.float32(3.4028234663852886e38)
#: The search loops are compiled without reference counting: numba's atomic increments and
#: decrements of every array handed to a helper took over half their time. Their scratch
#: arrays are made by a caller that counts references, and they copy arrays element by
#: element (a slice assignment needs the counting).
NO_NRT = {**JIT, "_nrt": False}


@njit(**JIT, inline="always")
def begin(src, dst, b, nbytes, n, factor):
    """Super-block b of the flattened rows of n values: its values, its bytes (zeroed), its
    first column, sigma2 (`factor` times its mean square, summed in order as ggml sums it:
    2 for IQ3, IQ2_S and IQ1, 1 for IQ2_XXS and IQ2_XS) and whether its values are all
    finite."""
    x = src[b * QK : (b + 1) * QK]
    y = dst[b * nbytes : (b + 1) * nbytes]
    for i in range(nbytes):
        y[i] = 0
    s = F0
    for i in range(QK):
        s += x[i] * x[i]
    return x, y, (b * QK) % n, factor * s / F_QK, not nonfinite(x)


#: Lists at least this long are searched point-parallel on a `transposed` table, when given.
LONG = 16
#: No transposed table: every list searched point by point (the short lists of IQ3, and
#: IQ1's, whose search was no faster point-parallel).
NO_TABLE = np.empty(0, np.float32)


@njit(**JIT, inline="always")
def best_neighbour(nb, start, values, table, levels, x, w, at, scale, L, d2):
    """ggml's iq3_find_best_neighbour / iq2_find_best_neighbour / iq1_find_best_neighbour2:
    of the grid points listed at nb[start] (a count, then indices), the one nearest to
    x[at:at+dim] at `scale` by the weighted squared distance to scale * its values
    (`values`, or for a long list the same laid out by `transposed` in `table`; the first on
    a tie), its levels put in L[at:at+dim]; -1 when no distance is below FLT_MAX (where
    ggml aborts). `d2`: room for a list's distances when there is a table. Each distance
    sums its terms in ggml's order; a long list's points are taken side by side, so that
    the loop vectorises."""
    count = np.int64(nb[start])
    dim = levels.shape[1]
    best = FLT_MAX
    index = np.int64(-1)
    if count < LONG or table.size == 0:
        for j in range(1, count + 1):
            g = np.int64(nb[start + j])
            d = F0
            for i in range(dim):
                diff = scale * values[g, i] - x[at + i]
                d += w[at + i] * diff * diff
            if d < best:
                best = d
                index = g
    else:
        base = dim * start
        for j in range(count):
            d2[j] = F0
        for i in range(dim):
            xi = x[at + i]
            wi = w[at + i]
            row = base + i * count
            for j in range(count):
                diff = scale * table[row + j] - xi
                d2[j] += wi * diff * diff
        for j in range(count):
            if d2[j] < best:
                best = d2[j]
                index = np.int64(nb[start + 1 + j])
    if index >= 0:
        for i in range(dim):
            L[at + i] = levels[index, i]
    return index
