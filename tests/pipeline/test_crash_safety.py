"""A conversion that dies midway never leaves a file under the output's name, and the next
run leaves no stray temporary file; a full disk is a clean I/O error (exit 7)."""

from __future__ import annotations

import resource
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

import bundler
from bundler.atomic import TEMP_PREFIX

pytestmark = pytest.mark.slow

#: The generated input: 6 tensors of 2048 x 4096 float32, 200 MB (the same values in
#: each, which keeps generating it quick; the pipeline does not care).
ROWS, COLS, COUNT = 2048, 4096, 6


@pytest.fixture(scope="module")
def big_input(tmp_path_factory) -> Path:
    """A 200 MB float32 SafeTensors model written with bundler's writer."""
    path = tmp_path_factory.mktemp("crash") / "big.safetensors"
    block = np.random.default_rng(0).standard_normal((ROWS, COLS), dtype=np.float32)
    tensors = [bundler.Tensor.from_array(f"blk.{i}.ffn_up.weight", block) for i in range(COUNT)]
    bundler.Bundle({"general.architecture": "llama"}, tensors).save(path)
    return path


def _command(*args: str) -> list[str]:
    """The installed `bundler` command (as conftest.run_cli runs it) with `args`."""
    exe = Path(sys.executable).with_name("bundler")
    return [str(exe), *args] if exe.exists() else [sys.executable, "-m", "bundler", *args]


def _partials(directory: Path) -> list[Path]:
    return sorted(p for p in directory.iterdir() if p.name.startswith(TEMP_PREFIX))


def _wait_for_growing_partial(directory: Path, proc: subprocess.Popen, timeout: float = 60.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and proc.poll() is None:
        for p in _partials(directory):
            try:
                if p.stat().st_size > 8 << 20:
                    return p
            except FileNotFoundError:
                pass
        time.sleep(0.002)
    raise AssertionError(f"no growing partial file appeared (exit {proc.poll()})")


def test_killed_conversion_leaves_no_output_and_the_next_run_no_stray_file(big_input, tmp_path):
    # every writer goes through atomic_output; tests/test_atomic.py pins it for each case
    dst = tmp_path / "out.gguf"
    proc = subprocess.Popen(
        _command("quantize", str(big_input), "-o", str(dst), "--type", "Q8_0", "-q"),
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    partial = _wait_for_growing_partial(tmp_path, proc)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert not dst.exists()
    assert _partials(tmp_path) == [partial]  # nobody was left to remove it

    done = subprocess.run(
        _command("quantize", str(big_input), "-o", str(dst), "--type", "Q8_0", "-q"),
        capture_output=True, text=True,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert _partials(tmp_path) == []
    assert sorted(p.name for p in tmp_path.iterdir()) == [dst.name]
    assert len(bundler.open(dst).tensors) == COUNT


def _limit_file_size(limit: int):
    def preexec() -> None:
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # write() fails with EFBIG instead
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))

    return preexec


@pytest.mark.parametrize("ext", ["gguf", "apr", "safetensors"])
def test_a_full_disk_is_a_clean_io_error_and_removes_the_partial_file(big_input, tmp_path, ext):
    dst = tmp_path / f"out.{ext}"
    done = subprocess.run(
        _command("quantize", str(big_input), "-o", str(dst), "--type", "Q8_0", "-q"),
        capture_output=True, text=True, preexec_fn=_limit_file_size(20 << 20),
    )  # fmt: skip
    assert done.returncode == 7, done.stderr
    assert str(dst) in done.stderr and "File too large" in done.stderr
    assert "Traceback" not in done.stderr and done.stderr.count("\n") == 1
    assert list(tmp_path.iterdir()) == []


def test_ctrl_c_midway_exits_130_and_leaves_nothing(big_input, tmp_path):
    dst = tmp_path / "out.gguf"
    proc = subprocess.Popen(
        _command("quantize", str(big_input), "-o", str(dst), "--type", "Q8_0", "-q"),
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    _wait_for_growing_partial(tmp_path, proc)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err
    assert "interrupted" in err and "Traceback" not in err
    assert list(tmp_path.iterdir()) == []


def test_an_output_directory_that_does_not_exist_is_an_io_error(big_input, tmp_path):
    dst = tmp_path / "missing" / "out.gguf"
    done = subprocess.run(
        _command("quantize", str(big_input), "-o", str(dst), "--type", "Q8_0"),
        capture_output=True, text=True,
    )  # fmt: skip
    assert done.returncode == 7 and str(dst) in done.stderr and "Traceback" not in done.stderr
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("ext", ["gguf", "safetensors"])
def test_a_split_output_killed_in_a_later_shard_leaves_no_shard(big_input, tmp_path, ext):
    # each 2048 x 4096 Q8_0 tensor is 8.5 MiB: a 20 MB limit gives three shards
    dst = tmp_path / f"out.{ext}"
    proc = subprocess.Popen(
        _command("quantize", str(big_input), "-o", str(dst), "--type", "Q8_0", "-q",
                 "--split-max-size", "20M"),
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    deadline = time.monotonic() + 60
    while len(_partials(tmp_path)) < 2 and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.002)  # the first shard is complete once the second one is being written
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert len(_partials(tmp_path)) >= 2
    assert [p for p in tmp_path.iterdir() if not p.name.startswith(TEMP_PREFIX)] == []


@pytest.mark.parametrize("ext", ["gguf", "safetensors"])
def test_an_error_in_a_later_shard_removes_the_shards_already_written(tmp_path, ext):
    ok = np.ones((256, 1024), np.float32)
    bad = ok.copy()
    bad[7, 9] = np.nan
    arrays = [ok, ok, bad]
    tensors = [bundler.Tensor.from_array(f"blk.{i}.ffn_up.weight", a) for i, a in enumerate(arrays)]
    src = tmp_path / "src.safetensors"
    bundler.Bundle({"general.architecture": "llama"}, tensors).save(src)
    out = tmp_path / "out"
    out.mkdir()
    with pytest.raises(bundler.NonFiniteError, match=r"'blk\.2\.ffn_up\.weight'"):
        bundler.quantize(src, out / f"q.{ext}", "q8_0", pure=True, split_max_size=300_000)
    assert list(out.iterdir()) == []
