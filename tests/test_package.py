"""The `bundler` namespace: every public name resolves on first use, the subpackages the
README names are reachable as attributes, and importing it loads nothing heavy."""

from __future__ import annotations

import subprocess
import sys

import pytest

import bundler


@pytest.mark.parametrize("name", bundler.__all__)
def test_every_public_name_resolves(name):
    assert getattr(bundler, name) is not None
    assert name in dir(bundler)


@pytest.mark.parametrize(("module", "attr"), [("codecs", "set_threads"), ("stats", "error_stats")])
def test_subpackages_are_attributes_in_a_fresh_interpreter(module, attr):
    code = f"import bundler; print(callable(bundler.{module}.{attr}))"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.stdout.strip() == "True", done.stderr


def test_an_unknown_attribute_is_an_attribute_error():
    with pytest.raises(AttributeError, match="no attribute 'nope'"):
        bundler.nope  # noqa: B018


def test_importing_the_command_line_loads_no_numpy():
    code = "import sys, bundler.cli; print('numpy' in sys.modules)"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.stdout.strip() == "False", done.stderr


def test_the_tests_say_what_to_install_when_a_requirement_is_missing():
    from conftest import PYPROJECT, missing_requirements

    tomllib = pytest.importorskip("tomllib")  # Python 3.11+

    pyproject = tomllib.loads(PYPROJECT.read_text(encoding="utf-8"))
    assert missing_requirements(pyproject) == []  # this interpreter runs the tests
    pyproject["project"]["dependencies"].append("no-such-package-anywhere>=1")
    pyproject["project"]["optional-dependencies"]["dev"].append("PyYAML>=6")
    assert missing_requirements(pyproject) == ["no-such-package-anywhere"]


def test_the_tests_run_in_one_process_with_the_parallel_plugin_disabled():
    # the configured addopts carry pytest-xdist's -n and --dist
    args = ["-p", "no:xdist", "-p", "no:cacheprovider", "-q", "-k", "unknown_attribute"]
    done = subprocess.run(
        [sys.executable, "-m", "pytest", *args, __file__], capture_output=True, text=True
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "1 passed" in done.stdout
