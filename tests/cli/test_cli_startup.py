"""What the console script does to its own process to start faster."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
from conftest import run_cli
from safetensors.numpy import save_file

# The console script's own process: `main(None)` on the given arguments, then what the
# process holds, and numba's compiled np.dot and scipy.linalg still usable afterwards.
_CHILD = """
import sys
sys.argv = ["bundler", *sys.argv[1:]]
from bundler.cli import main
code = main(None)
probed = "scipy.linalg" in sys.modules
import numba, numpy as np
dot = numba.njit(lambda a, b: np.dot(a, b))(np.arange(4.0), np.arange(4.0))
import scipy.linalg
print(code, probed, dot, float(scipy.linalg.norm(np.ones(4))))
"""


def test_encoding_command_does_not_import_scipy_linalg_for_numbas_blas_probe(tmp_path):
    pytest.importorskip("scipy.linalg", reason="the probe imports scipy only where it exists")
    src = tmp_path / "one.safetensors"
    save_file({"a.weight": np.ones((64, 64), np.float32)}, str(src))
    args = ["quantize", str(src), "-o", str(tmp_path / "one.gguf"), "--type", "Q8_0", "-q"]
    done = subprocess.run(
        [sys.executable, "-c", _CHILD, *args], capture_output=True, text=True, check=True
    )
    assert done.stdout.split() == ["0", "False", "14.0", "2.0"]


def test_version_is_read_from_the_installed_metadata_only_when_asked():
    from importlib.metadata import version

    done = run_cli("--version")
    assert (done.returncode, done.stdout, done.stderr) == (0, f"bundler {version('bundler')}\n", "")
    done = run_cli("--help")
    assert done.returncode == 0 and "--version" in done.stdout
