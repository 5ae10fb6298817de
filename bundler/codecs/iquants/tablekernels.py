"""Compiled loops that build the i-quants' search tables once per process: the neighbour
lists of the 8-value grids (`grid8`) and their point-parallel layout (`grid8.transposed`)."""

from __future__ import annotations

import numpy as np
from numba import njit

from bundler.codecs.iquants.grid8 import DIM
from bundler.codecs.kquants.common import JIT


@njit(**JIT)
def _neighbour_list(pos, lattice, nwant, d2, out):
    """The grid indices at the `nwant` smallest distinct squared distances from `pos`, by
    distance then index, into `out`; returns how many."""
    for j in range(lattice.shape[0]):
        s = 0
        for k in range(DIM):
            diff = np.int32(lattice[j, k]) - np.int32(pos[k])
            s += diff * diff
        d2[j] = s
    n = 0
    dist = -1
    for _ in range(nwant):
        nxt = -1  # the smallest distance above `dist`
        for j in range(d2.size):
            if d2[j] > dist and (nxt < 0 or d2[j] < nxt):
                nxt = d2[j]
        if nxt < 0:
            break
        dist = nxt
        for j in range(d2.size):
            if d2[j] == dist:
                out[n] = j
                n += 1
    return n


@njit(**JIT)
def neighbour_lists(numbers_lattice, lattice, kmap, nwant, offsets, neighbours):
    """For every number off the grid: with `neighbours` empty, its count of neighbours into
    `offsets`; else its count and list at `neighbours[offsets[i]]`."""
    d2 = np.empty(lattice.shape[0], np.int32)
    buf = np.empty(lattice.shape[0], np.int32)
    for i in range(kmap.size):
        if kmap[i] >= 0:
            continue
        n = _neighbour_list(numbers_lattice[i], lattice, nwant, d2, buf)
        if neighbours.size == 0:
            offsets[i] = n
            continue
        at = offsets[i]
        neighbours[at] = n
        for t in range(n):
            neighbours[at + 1 + t] = buf[t]


@njit(**JIT)
def transpose(nb, values, out):
    dim = values.shape[1]
    start = 0
    while start < nb.size:
        count = np.int64(nb[start])
        for j in range(count):
            g = np.int64(nb[start + 1 + j])
            for i in range(dim):
                out[dim * start + i * count + j] = values[g, i]
        start += count + 1
