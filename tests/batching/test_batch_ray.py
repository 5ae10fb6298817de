"""Batches on a local Ray cluster: the same bytes as a local run, and a worker killed in
the middle of a conversion is retried without leaving a partial file."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from batch_zoo import TYPE, expected, generated, outputs, partials, zoo
from conftest import IN_CI, run_cli

from bundler.atomic import TEMP_PREFIX

try:
    import ray
except ImportError:
    if IN_CI:
        raise
    pytest.skip('ray is not installed (pip install "bundler[ray]")', allow_module_level=True)


@pytest.fixture(scope="module")
def cluster():
    """A two-CPU Ray cluster on this machine; its address for `--ray ADDRESS`."""
    ray.init(
        num_cpus=2, object_store_memory=80 << 20, include_dashboard=False,
        log_to_driver=False,
    )  # fmt: skip
    try:
        yield ray.get_runtime_context().gcs_address
    finally:
        ray.shutdown()


def test_a_batch_on_ray_writes_the_same_bytes_as_a_local_run(cluster, zoo, expected, tmp_path):
    good = [str(p) for p in zoo if not p.name.startswith("broken")]
    out = tmp_path / "out"
    done = run_cli(
        "batch", *good, "-o", str(out), "--type", TYPE, "--allow-requantize", "--ray", cluster
    )
    assert done.returncode == 0, done.stderr
    assert outputs(out) == expected
    assert "(ray)" in done.stdout
    assert partials(tmp_path) == []


def test_a_broken_model_on_ray_is_a_typed_failure_not_a_retry(cluster, zoo, tmp_path):
    out = tmp_path / "out"
    done = run_cli(
        "batch", str(zoo[1]), str(zoo[2]), "-o", str(out), "--continue-on-error", "--json",
        "--ray", cluster,
    )  # fmt: skip
    assert done.returncode == 4, done.stderr
    assert '"TruncatedError"' in done.stdout
    assert sorted(p.name for p in out.iterdir()) == ["gen-a-INT8.gguf"]  # --bits 8 by default


def _kill_first_writer(directory: Path, proc: subprocess.Popen, killed: list) -> None:
    """Kill the worker process writing the first partial file that grows past 4 MB (its
    process id is in the partial file's name)."""
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and proc.poll() is None:
        for p in directory.glob(TEMP_PREFIX + "*"):
            try:
                if p.stat().st_size > 4 << 20:
                    pid = int(p.name.rsplit(".", 2)[-2])
                    os.kill(pid, signal.SIGKILL)
                    killed.append((p.name, pid))
                    return
            except (FileNotFoundError, ProcessLookupError):
                pass
        time.sleep(0.002)


def test_a_worker_killed_during_a_conversion_is_retried_and_leaves_no_partial_file(
    cluster, tmp_path
):
    src = tmp_path / "src"
    src.mkdir()
    # big enough that the writer is caught in the middle: 4 x 2048 x 4096 float32, 128 MB
    inputs = [generated(src / f"big-{i}.safetensors", i, 2048, 4096, 4) for i in range(2)]
    reference = tmp_path / "reference"
    local = run_cli("batch", *map(str, inputs), "-o", str(reference), "--type", TYPE)
    assert local.returncode == 0, local.stderr

    out = tmp_path / "out"
    out.mkdir()
    exe = Path(sys.executable).with_name("bundler")
    cmd = [str(exe)] if exe.exists() else [sys.executable, "-m", "bundler"]
    proc = subprocess.Popen(
        [*cmd, "batch", *map(str, inputs), "-o", str(out), "--type", TYPE, "--ray", cluster],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    killed: list = []
    watcher = threading.Thread(target=_kill_first_writer, args=(out, proc, killed))
    watcher.start()
    _, stderr = proc.communicate(timeout=600)
    watcher.join()
    assert killed, "no conversion was caught in the middle"
    assert proc.returncode == 0, stderr
    assert outputs(out) == outputs(reference)
    assert partials(out) == []


def test_the_same_config_runs_unchanged_on_ray_with_the_same_bytes(cluster, zoo, tmp_path):
    text = (
        f'type = "{TYPE}"\noutput_dir = "out"\n\n[[models]]\ninput = "{zoo[0].parent}/gen-*"\n'
        "types = ['Q8_0', 'F16']\n"
    )
    runs = {}
    for where, flags in (("local", []), ("ray", ["--ray", cluster])):
        (tmp_path / where).mkdir()
        config = tmp_path / where / "zoo.toml"
        config.write_text(text)
        done = run_cli("run", str(config), *flags)
        assert done.returncode == 0, done.stderr
        runs[where] = outputs(tmp_path / where / "out")
    assert len(runs["local"]) == 4 and runs["ray"] == runs["local"]
