"""The 8-value lattice grids of IQ2_XXS, IQ2_XS, IQ2_S, IQ1_S and IQ1_M, and the search
tables ggml's quantizers use over them (`iq2xs_init_impl`).

Every type stores groups of 8 values as the index of one point of a grid. A point has eight
2-bit levels l (level i in bits 2i..2i+1 of its 16-bit number `points[k]`); the encoders
search on the odd lattice 2l + 1 (`lattice`), the decoders multiply the type's value of each
level (`values`: 8, 25, 43 for IQ2; -1, 0, 1 for IQ1, to which IQ1 adds its delta).

`kmap` covers every 16-bit number below KMAP_SIZE (all eight levels 0..2 fit below it): the
grid index of a number that is a grid point, else -(offset + 1) where `neighbours[offset]`
counts the grid points that follow it, the neighbours of that number. The neighbours are
the grid points at the `nwant` smallest distinct squared lattice distances, ordered by
distance, then by grid index (ggml's qsort over (distance, index) pairs, a total order, so
the lists are exactly ggml's). IQ2_XXS and IQ2_XS keep 2 distances, IQ2_S 1, IQ1_S and
IQ1_M (which share one grid) 3.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import numpy as np
from numba import njit

from bundler.codecs.iquants.grid_points import POINTS_HEX
from bundler.codecs.kquants.common import JIT

#: Numbers the map covers: ggml's kmap_size, 0xAAAA (every level 2) + 2.
KMAP_SIZE = 43692
#: Values per grid point.
DIM = 8


@dataclass(frozen=True)
class GridParams:
    """What ggml's grid initialisation takes for one type."""

    #: points in the grid (256, 512, 1024 or 2048)
    size: int
    #: distinct distances kept in each neighbour list
    nwant: int
    #: the decoded value of each level 0..2
    levels: tuple[int, int, int]


_IQ2_LEVELS = (8, 25, 43)
_IQ1 = GridParams(2048, 3, (-1, 0, 1))

#: The parameters of each type whose grid ggml's `iq2xs_init_impl` builds.
PARAMS: dict[str, GridParams] = {
    "iq2_xxs": GridParams(256, 2, _IQ2_LEVELS),
    "iq2_xs": GridParams(512, 2, _IQ2_LEVELS),
    "iq2_s": GridParams(1024, 1, _IQ2_LEVELS),
    "iq1_s": _IQ1,
    "iq1_m": _IQ1,
}


@dataclass(frozen=True)
class Grid8:
    """One type's grid and search tables (read-only arrays)."""

    params: GridParams
    #: uint16 (size,): the levels of each point, 2 bits each
    points: np.ndarray
    #: int8 (size, 8): 2 * level + 1, the coordinates the encoders search on
    lattice: np.ndarray
    #: float32 (size, 8): the decoded value of each coordinate
    values: np.ndarray
    #: int32 (KMAP_SIZE,): grid index, or -(offset + 1) into `neighbours`
    kmap: np.ndarray
    #: uint16: for each number off the grid, a count then that many grid indices
    neighbours: np.ndarray

    def neighbours_of(self, number: int) -> np.ndarray:
        """The neighbour list of a number that is not a grid point (grid indices)."""
        code = int(self.kmap[number])
        if code >= 0:
            raise ValueError(f"{number:#x} is grid point {code}, it has no neighbour list")
        start = -code - 1
        return self.neighbours[start + 1 : start + 1 + int(self.neighbours[start])]


def levels_of(numbers: np.ndarray) -> np.ndarray:
    """The eight 2-bit levels of each 16-bit number, shape (..., 8)."""
    numbers = np.asarray(numbers, np.int32)
    return ((numbers[..., None] >> (2 * np.arange(DIM))) & 3).astype(np.int8)


@functools.cache
def grid(type_name: str) -> Grid8:
    """The grid and search tables of IQ2_XXS, IQ2_XS, IQ2_S, IQ1_S or IQ1_M, built once per
    process as ggml builds them."""
    try:
        params = PARAMS[type_name]
    except KeyError:
        raise ValueError(f"no 8-value grid for {type_name!r}; types: {sorted(PARAMS)}") from None
    points = np.frombuffer(bytes.fromhex(POINTS_HEX[params.size]), "<u2").astype(np.uint16)
    levels = levels_of(points)
    lattice = (2 * levels + 1).astype(np.int8)
    values = np.asarray(params.levels, np.float32)[levels]
    kmap = np.full(KMAP_SIZE, -1, np.int32)
    kmap[points] = np.arange(params.size, dtype=np.int32)
    numbers_lattice = (2 * levels_of(np.arange(KMAP_SIZE)) + 1).astype(np.int8)
    counts = np.zeros(KMAP_SIZE, np.int32)
    _neighbour_lists(numbers_lattice, lattice, kmap, params.nwant, counts, counts[:0])
    sizes = np.where(kmap < 0, counts + 1, 0)
    offsets = (np.cumsum(sizes) - sizes).astype(np.int32)
    neighbours = np.zeros(int(sizes.sum()), np.uint16)
    _neighbour_lists(numbers_lattice, lattice, kmap, params.nwant, offsets, neighbours)
    kmap[kmap < 0] = -(offsets[kmap < 0] + 1)
    for a in (points, lattice, values, kmap, neighbours):
        a.flags.writeable = False
    return Grid8(params, points, lattice, values, kmap, neighbours)


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
def _neighbour_lists(numbers_lattice, lattice, kmap, nwant, offsets, neighbours):
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
