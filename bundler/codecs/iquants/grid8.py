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
from pathlib import Path

import numpy as np

from bundler.codecs import tablecache
from bundler.codecs.iquants.grid_points import POINTS_HEX
from bundler.codecs.kernels import Compiled

#: Numbers the map covers: ggml's kmap_size, 0xAAAA (every level 2) + 2.
KMAP_SIZE = 43692
#: Values per grid point.
DIM = 8
#: ggml's IQ1S_DELTA (IQ1M_DELTA is the same): IQ1's values are a level's -1, 0, 1 plus or
#: minus it.
DELTA = np.float32(0.125)
#: IQ1's decoded value of each level with the delta added (X_P) or taken off (X_M).
X_P = np.array([-1 + 0.125, 0.125, 1 + 0.125], np.float32)
X_M = np.array([-1 - 0.125, -0.125, 1 - 0.125], np.float32)

_NEIGHBOUR_LISTS = Compiled("bundler.codecs.iquants.tablekernels", "neighbour_lists")
_TRANSPOSE = Compiled("bundler.codecs.iquants.tablekernels", "transpose")


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
    here = Path(__file__).parent
    sources = [here / "grid8.py", here / "grid_points.py", here / "tablekernels.py"]
    tables = tablecache.cached(
        f"grid8-{params.size}-{params.nwant}",
        sources,
        lambda: _neighbour_tables(points, lattice, params.nwant),
    )
    kmap, neighbours = tables["kmap"], tables["neighbours"]
    for a in (points, lattice, values, kmap, neighbours):
        a.flags.writeable = False
    return Grid8(params, points, lattice, values, kmap, neighbours)


def _neighbour_tables(points: np.ndarray, lattice: np.ndarray, nwant: int) -> dict:
    """`kmap` and `neighbours` of the grid of `points` (see `Grid8`)."""
    kmap = np.full(KMAP_SIZE, -1, np.int32)
    kmap[points] = np.arange(points.size, dtype=np.int32)
    numbers_lattice = (2 * levels_of(np.arange(KMAP_SIZE)) + 1).astype(np.int8)
    counts = np.zeros(KMAP_SIZE, np.int32)
    _NEIGHBOUR_LISTS(numbers_lattice, lattice, kmap, nwant, counts, counts[:0])
    sizes = np.where(kmap < 0, counts + 1, 0)
    offsets = (np.cumsum(sizes) - sizes).astype(np.int32)
    neighbours = np.zeros(int(sizes.sum()), np.uint16)
    _NEIGHBOUR_LISTS(numbers_lattice, lattice, kmap, nwant, offsets, neighbours)
    kmap[kmap < 0] = -(offsets[kmap < 0] + 1)
    return {"kmap": kmap, "neighbours": neighbours}


def transposed(nb: np.ndarray, values: np.ndarray) -> np.ndarray:
    """The values of the points of each neighbour list in `nb` (a count, then that many
    point indices, from `start`), laid out for `best_neighbour`: coordinate i of the j-th
    point of the list at `start` at [dim * start + i * count + j]."""
    out = np.zeros(values.shape[1] * nb.size, np.float32)
    _TRANSPOSE(nb, values, out)
    out.flags.writeable = False
    return out
