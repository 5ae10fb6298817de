"""Compiling only what is used: each K-quant's kernels compile on their own."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest


@pytest.mark.slow
def test_encoding_one_k_quant_compiles_no_other_types_search(tmp_path):
    code = "import numpy as np, bundler\nbundler.encode(np.ones((1, 256), np.float32), 'q6_k')\n"
    env = {**os.environ, "NUMBA_CACHE_DIR": str(tmp_path)}
    done = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True
    )
    assert "compiling the q6_k encoder kernels once" in done.stderr
    cached = " ".join(p.name for p in tmp_path.rglob("*.nbi"))
    assert "signed_lanes" in cached
    for other in ("scale_min_lanes", "q3_lanes", "k4_finish", "q2_k_finish", "decode"):
        assert other not in cached


@pytest.mark.parametrize(("given", "kept"), [(None, "PASSIVE"), ("ACTIVE", "ACTIVE")])
def test_openmp_threads_wait_passively_unless_the_user_chose(given, kept):
    env = {k: v for k, v in os.environ.items() if k != "OMP_WAIT_POLICY"}
    if given:
        env["OMP_WAIT_POLICY"] = given
    code = "import os, bundler.codecs; print(os.environ['OMP_WAIT_POLICY'])"
    done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)
    assert done.stdout.strip() == kept, done.stderr


# A thread imports the compiler while this one asks for its thread setting, as a kernel
# called from a pool thread does while the main thread is still loading the compiler.
_RACE = """
import threading
from bundler.codecs import kernels
kernels._PROCESS_THREADS[0] = 1
errors = []
importer = threading.Thread(target=lambda: __import__("numba"))
importer.start()
while importer.is_alive() and not errors:
    try:
        kernels.apply_threads()
        kernels.thread_count()
    except Exception as exc:
        errors.append(repr(exc))
importer.join()
print(errors)
"""


def test_thread_settings_wait_for_a_compiler_another_thread_is_still_importing():
    done = subprocess.run(
        [sys.executable, "-c", _RACE], capture_output=True, text=True, check=True, timeout=120
    )
    assert done.stdout.strip() == "[]"
