"""The allocation over the tensors' curves: the Lagrangian relaxation solved greedily on
each curve's lower convex hull, then the bytes left spent on the best single improvements
(bundler.plan.target states the problem)."""

from __future__ import annotations

import heapq
from collections.abc import Sequence

from bundler.plan.curves import Curve


def allocate(curves: Sequence[Curve], budget: int) -> list[int]:
    """Which point of each curve to take so that their bytes sum to at most `budget` with
    the smallest total error this greedy reaches (module docstring, step 5); raises
    ValueError when even the smallest points do not fit."""
    hulls = [c.hull() for c in curves]
    pick = [h[0] for h in hulls]
    used = sum(c.points[k].nbytes for c, k in zip(curves, pick, strict=True))
    if used > budget:
        raise ValueError(f"the smallest candidates need {used:,} bytes, the budget is {budget:,}")
    step = [0] * len(curves)
    heap: list[tuple[float, int, int]] = []

    def push(i: int) -> None:
        h = hulls[i]
        if step[i] + 1 < len(h):
            a, b = curves[i].points[h[step[i]]], curves[i].points[h[step[i] + 1]]
            gain = (a.error - b.error) / max(b.nbytes - a.nbytes, 1)
            heapq.heappush(heap, (-gain, i, step[i]))

    for i in range(len(curves)):
        push(i)
    while heap:
        _, i, s = heapq.heappop(heap)
        a, b = curves[i].points[hulls[i][s]], curves[i].points[hulls[i][s + 1]]
        if used + b.nbytes - a.nbytes > budget:
            continue  # its later hull points are bigger still
        used += b.nbytes - a.nbytes
        step[i] = s + 1
        pick[i] = hulls[i][s + 1]
        push(i)
    return _spend_rest(curves, pick, budget - used)


def _spend_rest(curves: Sequence[Curve], pick: list[int], left: int) -> list[int]:
    """Spend the bytes the hull walk left: the largest error reduction that fits, again."""
    while True:
        best = None
        for i, c in enumerate(curves):
            now = c.points[pick[i]]
            for k, p in enumerate(c.points):
                extra = p.nbytes - now.nbytes
                if 0 < extra <= left and p.error < now.error:
                    saving = now.error - p.error
                    if best is None or saving > best[0]:
                        best = (saving, i, k, extra)
        if best is None:
            return pick
        _, i, k, extra = best
        pick[i] = k
        left -= extra
