"""The 8-value grids shared by IQ2_XXS, IQ2_XS, IQ2_S, IQ1_S and IQ1_M: the points equal
the `gguf` package's tables, the C library decodes each grid index to the grid's values,
and the search tables are ggml's (grid points map to their index; every other number to
the grid points at its `nwant` smallest distances, by distance then index, checked against
a brute-force search over every number the encoders can look up and a sample of the rest).
"""

from __future__ import annotations

import gguf
import numpy as np
import pytest
from test_c_oracle import ggml_c  # noqa: F401  (the C library fixture)

from bundler.codecs.iquants import grid8

TYPES = sorted(grid8.PARAMS)
#: Numbers whose eight levels are all 0..2: the ones the encoders look up.
REACHABLE = np.array(
    [u for u in range(grid8.KMAP_SIZE) if all((u >> (2 * k)) & 3 < 3 for k in range(8))]
)


@pytest.mark.parametrize("name", TYPES)
def test_points_and_values_equal_the_gguf_package_tables(name):
    g = grid8.grid(name)
    quant = getattr(gguf.quants, name.upper())
    assert np.array_equal(g.points, np.frombuffer(bytes.fromhex(quant.grid_hex.decode()), "<u2"))
    quant.init_grid()
    assert np.array_equal(g.values, np.asarray(quant.grid).reshape(-1, 8))
    assert g.values.shape == (g.params.size, 8)


def test_iq1_s_and_iq1_m_share_one_grid():
    assert grid8.grid("iq1_m").params == grid8.grid("iq1_s").params
    assert np.array_equal(grid8.grid("iq1_m").neighbours, grid8.grid("iq1_s").neighbours)


def _all_points(name: str, size: int) -> np.ndarray:
    """Blocks holding every grid index in order with half d = 1, scale code 0 and no signs
    (IQ1_S: delta +1/8), as uint8 rows of one block each."""
    d_one = np.frombuffer(np.float16(1.0).tobytes(), np.uint8)
    idx = np.arange(size).reshape(-1, 32)
    rows = []
    for block in idx:
        if name == "iq2_xxs":
            q = np.zeros(16, np.uint32)
            shifts = np.uint32(1) << (8 * np.arange(4, dtype=np.uint32))
            q[0::2] = block.reshape(8, 4).astype(np.uint32) @ shifts
            body = q.view(np.uint8)
        elif name == "iq2_xs":
            body = np.concatenate([block.astype("<u2").view(np.uint8), np.zeros(8, np.uint8)])
        elif name == "iq2_s":
            qh = ((block >> 8).reshape(8, 4) << (2 * np.arange(4))).sum(axis=1)
            body = np.concatenate(
                [(block & 255).astype(np.uint8), np.zeros(32, np.uint8), qh.astype(np.uint8),
                 np.zeros(8, np.uint8)]
            )  # fmt: skip
        else:  # iq1_s: low 8 bits in qs, 3 high bits per group in qh, scale 0, delta +
            qh = ((block >> 8).reshape(8, 4) << (3 * np.arange(4))).sum(axis=1)
            body = np.concatenate([(block & 255).astype(np.uint8), qh.astype("<u2").view(np.uint8)])
        rows.append(np.concatenate([d_one, body]))
    return np.stack(rows)


@pytest.mark.oracle_c
@pytest.mark.parametrize("name", ["iq2_xxs", "iq2_xs", "iq2_s", "iq1_s"])
def test_the_c_library_decodes_every_grid_index_to_the_grid_values(ggml_c, name):  # noqa: F811
    g = grid8.grid(name)
    raw = _all_points(name, g.params.size)
    decoded = ggml_c.dequantize(name, raw, (len(raw), 256)).reshape(-1, 8)
    # IQ2: d * (0.5 + 0) * 0.25 * value; IQ1_S: d * (2 * 0 + 1) * (value + 1/8)
    expect = g.values + np.float32(0.125) if name == "iq1_s" else g.values * np.float32(0.125)
    np.testing.assert_array_equal(decoded, expect)


def test_grid_points_map_to_their_index():
    for name in TYPES:
        g = grid8.grid(name)
        assert np.array_equal(g.kmap[g.points], np.arange(g.params.size))
        assert np.array_equal(g.lattice, 2 * grid8.levels_of(g.points) + 1)
        assert (g.kmap < 0).sum() == grid8.KMAP_SIZE - g.params.size


def _brute_force(g: grid8.Grid8, numbers: np.ndarray) -> list[list[int]]:
    """The neighbours of each number by sorting every (distance, index) pair."""
    pos = 2 * grid8.levels_of(numbers).astype(np.int32) + 1
    d2 = ((pos[:, None, :] - g.lattice[None, :, :].astype(np.int32)) ** 2).sum(axis=2)
    size = g.params.size
    keys = np.sort(d2 * size + np.arange(size), axis=1)
    dist = keys // size
    rank = np.cumsum(np.diff(dist, axis=1, prepend=dist[:, :1]) != 0, axis=1)
    keep = rank < g.params.nwant
    return [list(k[m] % size) for k, m in zip(keys, keep, strict=True)]


@pytest.mark.parametrize("name", ["iq2_xxs", "iq2_xs", "iq2_s", "iq1_s"])
def test_neighbour_lists_are_the_nearest_distances_by_distance_then_index(name):
    g = grid8.grid(name)
    rng = np.random.default_rng(len(name))
    others = rng.choice(grid8.KMAP_SIZE, 1500, replace=False)
    numbers = np.concatenate([REACHABLE, others])
    numbers = numbers[g.kmap[numbers] < 0]
    for start in range(0, numbers.size, 1024):
        chunk = numbers[start : start + 1024]
        for number, want in zip(chunk, _brute_force(g, chunk), strict=True):
            assert list(g.neighbours_of(int(number))) == want, hex(number)


def test_neighbour_lists_fill_the_table_exactly():
    for name in ["iq2_xxs", "iq1_s"]:
        g = grid8.grid(name)
        off = grid8.KMAP_SIZE - g.params.size
        assert g.neighbours.size == off + sum(
            len(g.neighbours_of(u)) for u in np.flatnonzero(g.kmap < 0)
        )


def test_grid_points_have_no_neighbour_list_and_unknown_types_are_refused():
    g = grid8.grid("iq2_s")
    with pytest.raises(ValueError, match="is grid point 0"):
        g.neighbours_of(int(g.points[0]))
    with pytest.raises(ValueError, match="no 8-value grid for 'iq3_s'"):
        grid8.grid("iq3_s")
    assert not g.kmap.flags.writeable
