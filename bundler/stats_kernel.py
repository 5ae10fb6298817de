"""Compiled single-pass sums for bundler.stats (float64 accumulation, fixed partition).

The values are cut into fixed blocks (`stats.BLOCK`) whose partial sums are added in block
order, so the result is the same whatever the thread count. A range kernel: `stats` cuts
the blocks over the threads (`kernels.split_run`), so that it runs from its native entry.
"""

from __future__ import annotations

import numpy as np
from numba import njit

from bundler.stats import BLOCK


@njit(cache=True, nogil=True)
def partial_sums(a, b, out, k0, k1):  # pragma: no cover - compiled
    """Per block k of k0..k1, into out[k]: sum e^2, sum |e|, max |e|, sum a*b, sum a^2,
    sum b^2 (e = a - b)."""
    n = a.size
    for k in range(k0, k1):
        sq = ab = mx = xy = xx = yy = 0.0
        for i in range(k * BLOCK, min(n, (k + 1) * BLOCK)):
            x = np.float64(a[i])
            y = np.float64(b[i])
            e = x - y
            sq += e * e
            ab += abs(e)
            mx = max(mx, abs(e))
            xy += x * y
            xx += x * x
            yy += y * y
        out[k, 0] = sq
        out[k, 1] = ab
        out[k, 2] = mx
        out[k, 3] = xy
        out[k, 4] = xx
        out[k, 5] = yy
