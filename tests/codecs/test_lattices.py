"""The IQ3 lattices (bundler/codecs/iquants/grid4.py) against the gguf package's tables and
the C library's decoding, the IQ1 decoders' grid values against grid8's, and the blocks
ggml's lattice searches (IQ3, IQ2, IQ1) abort on: refused by bundler with a typed error
naming the first such block, where the C library kills the process."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import gguf
import numpy as np
import pytest
from test_c_oracle import ggml_c  # noqa: F401  (the C library fixture)

from bundler.codecs import kernel_threads, registry
from bundler.codecs.iquants import grid4
from bundler.errors import UsageError

TYPES = ["iq3_xxs", "iq3_s"]
ROOT = Path(__file__).parents[2]


@pytest.mark.parametrize("name", TYPES)
def test_lattice_values_equal_the_gguf_package_grid(name):
    quant = getattr(gguf.quants, name.upper())
    quant.init_grid()
    np.testing.assert_array_equal(grid4.decoded(name), quant.grid.reshape(quant.grid_shape))


def _every_point(name: str) -> np.ndarray:
    """Blocks that decode every lattice point with d = 1, scale 0 and plus signs."""
    facts = registry.get(name).facts
    size = grid4.SIZE[name]
    blocks = np.zeros((size // 64, facts.type_size), np.uint8)
    blocks[:, 1] = 0x3C  # half 1.0
    index = np.arange(size).reshape(-1, 64)
    blocks[:, 2:66] = index & 255
    if name == "iq3_s":
        # the ninth bit: bit k of qh[ib] for the k-th 4 values of sub-block ib
        high = (index >> 8).reshape(-1, 8, 8)
        blocks[:, 66:74] = (high << np.arange(8)).sum(axis=-1)
    return blocks


@pytest.mark.oracle_c
@pytest.mark.parametrize("name", TYPES)
def test_every_lattice_point_decodes_as_the_c_library_decodes_it(ggml_c, name):  # noqa: F811
    blocks = _every_point(name)
    shape = (len(blocks), 256)
    theirs = ggml_c.dequantize(name, blocks, shape).reshape(-1, 4)
    # IQ3_XXS's sub-block scale 0 is d * 0.25, IQ3_S's is d
    unit = 0.25 if name == "iq3_xxs" else 1.0
    np.testing.assert_array_equal(theirs, grid4.decoded(name) * np.float32(unit))
    np.testing.assert_array_equal(registry.get(name).decode(blocks, shape).reshape(-1, 4), theirs)


@pytest.mark.parametrize("size", [256, 512])
def test_each_off_lattice_point_lists_the_lattice_points_nearest_to_it(size):
    lattice = grid4.lattice(size)
    on = np.flatnonzero(lattice.kmap >= 0)
    assert np.array_equal(grid4.POINTS[size][lattice.kmap[on]], on)
    odd = lattice.odd.astype(np.int64)
    distances = 2 if size == 256 else 3
    for u in np.flatnonzero(lattice.kmap < 0)[::37]:
        start = -lattice.kmap[u] - 1
        listed = lattice.neighbours[start + 1 : start + 1 + lattice.neighbours[start]]
        d2 = ((2 * grid4.levels(np.array([u]))[0] + 1 - odd) ** 2).sum(axis=1)
        nearest = np.unique(d2)[:distances]
        near = np.flatnonzero(np.isin(d2, nearest))
        assert list(listed) == sorted(near, key=lambda j: (d2[j], j)), u


def test_iq1_decoders_take_grid8_values_without_building_its_search_tables():
    from bundler.codecs import iquants
    from bundler.codecs.iquants import grid8

    for name in ("iq1_s", "iq1_m"):
        np.testing.assert_array_equal(iquants._grid8_values(name), grid8.grid(name).values)


def _overflow(name: str) -> np.ndarray:
    """A super-block that overflows the lattice search of `name`: 1e-45 and 1e38 alternating
    (IQ1's only from such magnitudes), for IQ2_XXS (whose search survives that one) 1e38
    throughout."""
    pair = [1e38, 1e38] if name == "iq2_xxs" else [1e-45, 1e38]
    return np.resize(np.array(pair, np.float32), 256)


def _overflowing(name: str) -> np.ndarray:
    """Three rows of 512, the last super-block one that overflows the search of `name`."""
    x = np.random.default_rng(3).standard_normal((3, 512)).astype(np.float32)
    x[2, 256:] = _overflow(name)
    return x


@pytest.mark.oracle_c
@pytest.mark.parametrize("name", [*TYPES, "iq2_xxs", "iq2_xs", "iq2_s", "iq1_s", "iq1_m"])
def test_a_block_whose_search_overflows_is_refused_where_the_c_library_aborts(ggml_c, name):  # noqa: F811
    x = _overflowing(name)
    codec = registry.get(name)
    w = np.linspace(0.5, 2.0, 512, dtype=np.float32) if codec.facts.requires_importance else None
    with pytest.raises(UsageError, match=r"block of 256 values from index \(2, 256\).*aborts"):
        codec.encode(x, importance=w)
    np.testing.assert_array_equal(
        codec.encode(x[:2], importance=w), ggml_c.quantize(name, x[:2], imatrix=w)
    )
    code = (
        "import sys, numpy as np\n"
        "from tools.reference import ggml_c\n"
        "w = np.load(sys.argv[3]) if len(sys.argv) > 3 else None\n"
        "ggml_c.quantize(sys.argv[1], np.load(sys.argv[2]), imatrix=w)\n"
    )
    folder = ROOT / ".pytest_cache"
    folder.mkdir(exist_ok=True)
    args = [name, str(folder / f"overflow-{name}.npy")]
    np.save(args[1], x[2:])
    if w is not None:
        args.append(str(folder / f"overflow-{name}-w.npy"))
        np.save(args[2], w)
    run = subprocess.run(
        [sys.executable, "-c", code, *args], cwd=ROOT, capture_output=True, text=True
    )
    # an assertion, or (IQ2_XXS's point off its grid) ggml's "Oops" and abort
    assert run.returncode < 0 and re.search("GGML_ASSERT|fatal error", run.stderr), (
        run.returncode,
        run.stderr,
    )


@pytest.mark.parametrize("threads", [1, 2])
@pytest.mark.parametrize("name", [*TYPES, "iq2_xxs", "iq2_xs", "iq2_s", "iq1_s", "iq1_m"])
def test_the_refusal_names_the_first_overflowing_block_whatever_the_thread_split(name, threads):
    x = np.random.default_rng(4).standard_normal((64, 512)).astype(np.float32)
    overflow = _overflow(name)
    x[50, :256] = overflow  # in the second thread's half
    x[30, 256:] = overflow  # the first, in the first thread's half
    codec = registry.get(name)
    w = np.linspace(0.5, 2.0, 512, dtype=np.float32) if codec.facts.requires_importance else None
    with kernel_threads(threads), pytest.raises(UsageError, match=r"from index \(30, 256\)"):
        codec.encode(x, importance=w)
    x[30] = x[29]
    with kernel_threads(threads), pytest.raises(UsageError, match=r"from index \(50, 0\)"):
        codec.encode(x, importance=w)
