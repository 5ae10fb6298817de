"""What the console script does to its own process to start faster."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
from conftest import run_cli
from safetensors.numpy import save_file

from bundler.cli import ALSO, COMMANDS

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


def test_version_alone_imports_no_command_module():
    code = (
        "import sys\nfrom bundler.cli import main\ncode = main(['--version'])\n"
        "print(code, sorted(m for m in sys.modules if m.startswith('bundler.cli.')))"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.stdout.splitlines()[-1] == "0 []", done.stderr


@pytest.mark.parametrize("module", COMMANDS)
def test_a_command_modules_commands_are_its_own_name_and_its_listed_others(module):
    import argparse
    import importlib

    sub = argparse.ArgumentParser().add_subparsers()
    importlib.import_module(f"bundler.cli.{module}").add_parser(sub)
    assert sorted(sub.choices) == sorted([module, *(c for c, m in ALSO.items() if m == module)])


@pytest.mark.parametrize("command", [*COMMANDS, *ALSO])
def test_a_command_is_parsed_by_its_modules_parser_alone_as_by_the_whole_one(command):
    import contextlib
    import io

    from bundler.cli import _command_of, build_parser

    def help_text(parser):
        out = io.StringIO()
        with contextlib.redirect_stdout(out), pytest.raises(SystemExit):
            parser.parse_args([command, "--help"])
        return out.getvalue()

    module = _command_of([command, "--help"])
    assert module == ALSO.get(command, command)
    alone = build_parser(module)
    assert list(alone._subparsers._group_actions[0].choices) == [
        c for c in [module, *ALSO] if c == module or ALSO.get(c) == module
    ]
    assert help_text(alone) == help_text(build_parser())
    assert help_text(alone).startswith(f"usage: bundler {command}")


# A console-script run: whether numba's registries were installed (numba.np.linalg is one
# of the modules its context refresh imports), then the output's bytes.
_WARM_CHILD = """
import sys
sys.argv = ["bundler", *sys.argv[1:]]
from bundler.cli import main
code = main(None)
print(code, "numba.np.linalg" in sys.modules)
"""


@pytest.mark.parametrize("type_name", ["Q8_0", "Q4_K_M", "int8"])
def test_warm_console_script_loads_cached_kernels_without_numbas_registries(type_name, tmp_path):
    import bundler

    src = tmp_path / "one.safetensors"
    x = np.random.default_rng(0).standard_normal((64, 256)).astype(np.float32)
    save_file({"blk.0.ffn_up.weight": x}, str(src))
    out = tmp_path / "one.gguf"
    args = ["quantize", str(src), "-o", str(out), "--type", type_name, "-q", "--force"]
    run = [sys.executable, "-c", _WARM_CHILD, *args]
    subprocess.run(run, capture_output=True, text=True, check=True)  # compiles if not cached
    done = subprocess.run(run, capture_output=True, text=True, check=True)
    assert done.stdout.split() == ["0", "False"], done.stderr
    bundler.quantize(str(src), str(tmp_path / "lib.gguf"), type_name)
    assert out.read_bytes() == (tmp_path / "lib.gguf").read_bytes()


def test_a_cached_kernel_that_fails_to_load_lazily_is_loaded_as_numba_does(monkeypatch):
    import contextlib
    from types import SimpleNamespace

    from numba.core.runtime import rtsys

    from bundler.cli.startup import _patch_load_overload

    calls = []
    monkeypatch.setattr(rtsys, "initialize", lambda ctx: calls.append("runtime"))

    class Cache:
        def load_overload(self, sig, target_context):
            calls.append("refreshed")
            return "loaded"

        def _guard_against_spurious_io_errors(self):
            return contextlib.nullcontext()

        def _load_overload(self, sig, target_context):
            calls.append("lazy")
            if sig == "needs a registry":
                raise RuntimeError(sig)
            return "loaded lazily"

    _patch_load_overload(SimpleNamespace(Cache=Cache))
    assert Cache().load_overload("plain", object()) == "loaded lazily"
    assert calls == ["runtime", "lazy"]
    calls.clear()
    assert Cache().load_overload("needs a registry", object()) == "loaded"
    assert calls == ["runtime", "lazy", "refreshed"]


#: What a conversion to a GGML type has no use for: the affine codec and its calibration,
#: the size search, the other containers' code and, once the kernels have entries, any
#: compiler (their imports were a fifth of a small conversion's start).
_NOT_FOR_GGML = (
    "bundler.codecs.affine.codec", "bundler.codecs.affine.calibration", "bundler.plan.target",
    "bundler.containers.apr", "bundler.containers.onnx", "bundler.assets", "numba", "llvmlite",
)  # fmt: skip


def test_a_conversion_to_a_ggml_type_loads_no_other_family_format_or_compiler(tmp_path):
    src = tmp_path / "one.safetensors"
    save_file({"a.weight": np.ones((64, 256), np.float32)}, str(src))
    code = (
        "import sys\nfrom bundler.cli import main\ncode = main(sys.argv[1:])\n"
        f"print(code, [m for m in {_NOT_FOR_GGML!r} if m in sys.modules])"
    )
    out = tmp_path / "one.gguf"
    args = ["quantize", str(src), "-o", str(out), "--type", "Q4_0", "-q", "--force"]
    subprocess.run([sys.executable, "-c", code, *args], capture_output=True, check=True)
    done = subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True)
    assert done.stdout.splitlines()[-1] == "0 []", done.stderr


@pytest.mark.parametrize(("given", "expected"), [(None, "4"), ("28", "28")])
def test_console_script_tells_openblas_threads_to_sleep_unless_the_user_chose(given, expected):
    import os

    code = (
        "import os, sys\nsys.argv = ['bundler', 'types', '--json']\nfrom bundler.cli import run\n"
        "before = 'numpy' in sys.modules\ncode = run()\n"
        "print(code, before, 'numpy' in sys.modules, os.environ['OPENBLAS_THREAD_TIMEOUT'])"
    )
    env = {k: v for k, v in os.environ.items() if k != "OPENBLAS_THREAD_TIMEOUT"}
    if given is not None:
        env["OPENBLAS_THREAD_TIMEOUT"] = given
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env)
    # set before numpy (and its OpenBLAS) is loaded, which reads it once at load
    assert done.stdout.splitlines()[-1] == f"0 False True {expected}", done.stderr
