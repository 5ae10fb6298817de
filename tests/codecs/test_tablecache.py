"""The cache of built search tables: read back equal, rebuilt when its inputs change or
its file is damaged, never required."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from bundler.codecs import tablecache


@pytest.fixture
def cache(tmp_path, monkeypatch) -> Path:
    monkeypatch.setenv("BUNDLER_CACHE", str(tmp_path))
    monkeypatch.delenv(tablecache.ENV_SWITCH, raising=False)
    return tmp_path / "tables"


class Builder:
    """A table builder that counts its calls."""

    def __init__(self):
        self.calls = 0

    def __call__(self) -> dict[str, np.ndarray]:
        self.calls += 1
        return {"kmap": np.arange(-5, 7, dtype=np.int32), "lists": np.arange(9, dtype=np.uint16)}


def _same(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(
        a[k].dtype == b[k].dtype and np.array_equal(a[k], b[k]) for k in a
    )


def test_a_second_call_reads_the_tables_the_first_built(cache):
    build = Builder()
    first = tablecache.cached("t", [b"x"], build)
    second = tablecache.cached("t", [b"x"], build)
    assert build.calls == 1
    assert _same(first, second) and _same(second, Builder()())
    assert len(list(cache.glob("t-*.npz"))) == 1


def test_other_inputs_or_a_changed_source_file_build_again(cache, tmp_path):
    source = tmp_path / "source.py"
    source.write_text("A = 1\n")
    build = Builder()
    tablecache.cached("t", [source, b"x"], build)
    tablecache.cached("t", [source, b"y"], build)
    source.write_text("A = 2\n")
    tablecache.cached("t", [source, b"x"], build)
    assert build.calls == 3


def _truncate(path: Path) -> None:
    path.write_bytes(path.read_bytes()[:-40])


def _flip_array_byte(path: Path) -> None:
    # rewrite the archive with one value changed and the old digest kept
    with np.load(path) as npz:
        arrays = {k: npz[k] for k in npz.files}
    arrays["lists"] = arrays["lists"].copy()
    arrays["lists"][3] ^= 1
    np.savez(path.with_suffix(""), **arrays)


def _drop_digest(path: Path) -> None:
    with np.load(path) as npz:
        arrays = {k: npz[k] for k in npz.files if k != "sha256"}
    np.savez(path.with_suffix(""), **arrays)


def _not_an_archive(path: Path) -> None:
    path.write_bytes(b"not an archive")


@pytest.mark.parametrize("damage", [_truncate, _flip_array_byte, _drop_digest, _not_an_archive])
def test_a_damaged_file_is_never_used_and_is_written_anew(cache, damage):
    build = Builder()
    tablecache.cached("t", [b"x"], build)
    (path,) = cache.glob("t-*.npz")
    damage(path)
    again = tablecache.cached("t", [b"x"], build)
    assert build.calls == 2 and _same(again, Builder()())
    tablecache.cached("t", [b"x"], build)
    assert build.calls == 2  # the rewritten file is read


def test_switched_off_every_call_builds_and_nothing_is_written(cache, monkeypatch):
    monkeypatch.setenv(tablecache.ENV_SWITCH, "0")
    build = Builder()
    tablecache.cached("t", [b"x"], build)
    tablecache.cached("t", [b"x"], build)
    assert build.calls == 2 and not cache.exists()


def test_a_cache_that_cannot_be_written_still_gives_the_tables(cache):
    cache.parent.mkdir(exist_ok=True)
    cache.write_text("a file where the folder would be")
    build = Builder()
    assert _same(tablecache.cached("t", [b"x"], build), Builder()())
    assert _same(tablecache.cached("t", [b"x"], build), Builder()())
    assert build.calls == 2


_GRIDS = """
import hashlib, pathlib, sys
from bundler.codecs.iquants import grid4, grid8
h = hashlib.sha256()
for name in grid8.PARAMS:
    g = grid8.grid(name)
    h.update(g.kmap.tobytes() + g.neighbours.tobytes())
for size in (256, 512):
    lat = grid4.lattice(size)
    h.update(lat.kmap.tobytes() + lat.neighbours.tobytes())
print(h.hexdigest(), len(list(pathlib.Path(sys.argv[1]).glob("*.npz"))))
"""


def test_the_iquant_grids_read_from_the_cache_equal_the_grids_built(tmp_path):
    """Three processes: building and writing, reading, and building with the cache off."""

    def run(switch: str) -> list[str]:
        env = {"BUNDLER_CACHE": str(tmp_path), tablecache.ENV_SWITCH: switch}
        proc = subprocess.run(
            [sys.executable, "-c", _GRIDS, str(tmp_path / "tables")],
            env={**os.environ, **env},
            capture_output=True,
            text=True,
            check=True,
        )
        return proc.stdout.split()

    written, read, built = run("1"), run("1"), run("0")
    assert written[0] == read[0] == built[0]
    assert written[1] == read[1] == "6"  # grid8 4 (IQ1_S and IQ1_M share one), grid4 2
