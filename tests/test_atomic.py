"""atomic_output: the temporary file, its lock, and the removal of stale partial files."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from bundler.atomic import TEMP_PREFIX, atomic_output, output_group
from bundler.errors import BundlerIOError, OutputExistsError


def _entries(directory) -> list[str]:
    return sorted(p.name for p in directory.iterdir())


def test_the_output_appears_only_when_the_block_ends(tmp_path):
    dst = tmp_path / "out.bin"
    with atomic_output(dst) as f:
        f.write(b"data")
        assert not dst.exists()
        assert len(_entries(tmp_path)) == 1 and _entries(tmp_path)[0].startswith(TEMP_PREFIX)
    assert _entries(tmp_path) == ["out.bin"] and dst.read_bytes() == b"data"


@pytest.mark.parametrize("error", [RuntimeError("boom"), KeyboardInterrupt()])
def test_an_error_inside_removes_the_partial_and_keeps_the_old_file(tmp_path, error):
    dst = tmp_path / "out.bin"
    dst.write_bytes(b"old")
    with pytest.raises(type(error)), atomic_output(dst) as f:
        f.write(b"new")
        raise error
    assert _entries(tmp_path) == ["out.bin"] and dst.read_bytes() == b"old"


def test_an_os_error_inside_becomes_an_io_error_naming_the_output(tmp_path):
    dst = tmp_path / "out.bin"
    with (
        pytest.raises(BundlerIOError, match=f"{dst}: write failed: No space left"),
        atomic_output(dst),
    ):
        raise OSError(28, "No space left on device")
    assert _entries(tmp_path) == []


def test_a_missing_directory_is_an_io_error(tmp_path):
    with (
        pytest.raises(BundlerIOError, match="cannot create output"),
        atomic_output(tmp_path / "missing" / "out.bin"),
    ):
        pass


def test_an_existing_output_without_force_is_refused_before_any_file_is_made(tmp_path):
    dst = tmp_path / "out.bin"
    dst.write_bytes(b"old")
    with pytest.raises(OutputExistsError), atomic_output(dst, force=False):
        pass
    assert _entries(tmp_path) == ["out.bin"]


@pytest.mark.parametrize("pid", [os.getpid(), 1, 2**22 + 1], ids=["this-process", "init", "gone"])
def test_a_stale_partial_is_removed_whatever_pid_its_name_holds(tmp_path, pid):
    # a killed writer leaves an unlocked file; its pid may since belong to anyone (in a
    # container every run may even get the same pid as the killed one)
    stale = tmp_path / f"{TEMP_PREFIX}out.bin.{pid}.abc123"
    stale.write_bytes(b"partial")
    other = tmp_path / f"{TEMP_PREFIX}other.bin.{pid}.abc123"
    other.write_bytes(b"partial of another output")
    with atomic_output(tmp_path / "out.bin") as f:
        f.write(b"x")
    assert _entries(tmp_path) == sorted(["out.bin", other.name])


def test_the_partial_of_a_live_writer_is_left_alone(tmp_path):
    dst = tmp_path / "out.bin"
    script = (
        "import sys, time\n"
        "from bundler.atomic import atomic_output\n"
        f"with atomic_output({str(dst)!r}) as f:\n"
        "    f.write(b'first'); f.flush(); print('ready', flush=True); sys.stdin.readline()\n"
    )
    writer = subprocess.Popen(
        [sys.executable, "-c", script], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    )
    try:
        assert writer.stdout.readline().strip() == "ready"
        with atomic_output(dst) as f:  # a second writer of the same name meanwhile
            f.write(b"second")
        assert len([n for n in _entries(tmp_path) if n.startswith(TEMP_PREFIX)]) == 1
    finally:
        writer.communicate("go\n", timeout=30)
    assert writer.returncode == 0
    assert _entries(tmp_path) == ["out.bin"] and dst.read_bytes() == b"first"


def test_files_of_a_group_appear_together_when_the_group_ends(tmp_path):
    with output_group():
        for name in ("a.bin", "b.bin"):
            with atomic_output(tmp_path / name) as f:
                f.write(name.encode())
        assert all(n.startswith(TEMP_PREFIX) for n in _entries(tmp_path))
    assert _entries(tmp_path) == ["a.bin", "b.bin"]
    assert (tmp_path / "b.bin").read_bytes() == b"b.bin"


def test_an_error_in_a_group_removes_the_files_it_finished(tmp_path):
    (tmp_path / "a.bin").write_bytes(b"old")
    with pytest.raises(RuntimeError), output_group():
        with atomic_output(tmp_path / "a.bin") as f:
            f.write(b"new")
        with atomic_output(tmp_path / "b.bin") as f:
            raise RuntimeError("boom")
    assert _entries(tmp_path) == ["a.bin"] and (tmp_path / "a.bin").read_bytes() == b"old"


def test_a_group_renames_its_entry_file_last(tmp_path, monkeypatch):
    renamed = []
    replace = os.replace
    monkeypatch.setattr(os, "replace", lambda a, b: (renamed.append(os.path.basename(b)),
                                                      replace(a, b)))  # fmt: skip
    with output_group(entry=tmp_path / "index.json"):
        for name in ("index.json", "1.bin", "2.bin"):
            with atomic_output(tmp_path / name) as f:
                f.write(b"x")
    assert renamed == ["1.bin", "2.bin", "index.json"]


def test_a_group_inside_a_group_leaves_the_renames_to_the_outer_one(tmp_path):
    with output_group():
        with output_group(), atomic_output(tmp_path / "a.bin") as f:
            f.write(b"a")
        assert _entries(tmp_path)[0].startswith(TEMP_PREFIX)
    assert _entries(tmp_path) == ["a.bin"]
