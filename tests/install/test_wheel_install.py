"""A non-editable `pip install .` into a fresh virtual environment: what ships in the wheel
(the recipes, `py.typed`, the version) works from outside the source tree."""

from __future__ import annotations

import importlib.metadata
import json
import re
import shutil
import subprocess
import sys
import venv
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
#: pyproject.toml's build requirement (the SPDX license string needs it)
MIN_SETUPTOOLS = 77
SOURCES = ("bundler", "recipes", "pyproject.toml", "setup.py", "README.md")


@pytest.fixture(scope="module")
def installed(tmp_path_factory) -> Path:
    """The bin/ directory of a fresh venv with bundler installed (not editable) from a copy
    of the sources; its dependencies are the test interpreter's, seen through a .pth file."""
    base = tmp_path_factory.mktemp("wheel")
    src = base / "src"
    src.mkdir()
    skip = shutil.ignore_patterns("__pycache__", "*.egg-info")
    for name in SOURCES:
        path = ROOT / name
        if path.is_dir():
            shutil.copytree(path, src / name, ignore=skip)
        else:
            shutil.copy2(path, src / name)
    env_dir = base / "venv"
    venv.create(env_dir, with_pip=False)
    bin_dir = env_dir / ("Scripts" if sys.platform == "win32" else "bin")
    python = bin_dir / "python"
    purelib = subprocess.run(
        [str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
        check=True, capture_output=True, text=True,
    ).stdout.strip()  # fmt: skip
    ours = [p for p in sys.path if p.endswith(("site-packages", "dist-packages"))]
    (Path(purelib) / "test-dependencies.pth").write_text("\n".join(ours) + "\n")
    # without a recent enough setuptools here, pip builds in an isolated environment
    isolation = ["--no-build-isolation"] if _setuptools_builds() else []
    done = subprocess.run(
        [sys.executable, "-m", "pip", "--python", str(python), "install", "-q", "--no-deps",
         *isolation, str(src)],
        capture_output=True, text=True,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    shutil.rmtree(src)  # the installed package must not lean on the sources
    return bin_dir


def _setuptools_builds() -> bool:
    try:
        major = int(importlib.metadata.version("setuptools").split(".")[0])
    except importlib.metadata.PackageNotFoundError:
        return False
    return major >= MIN_SETUPTOOLS


def _run(bin_dir: Path, cwd: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [str(bin_dir / "bundler"), *args], capture_output=True, text=True, cwd=cwd
    )


@pytest.mark.slow
def test_recipe_list_shows_every_recipe_of_the_source_tree(installed, tmp_path):
    done = _run(installed, tmp_path, "recipe", "list", "--json")
    assert done.returncode == 0, done.stderr
    listed = {r["name"]: Path(r["path"]) for r in json.loads(done.stdout)}
    assert sorted(listed) == sorted(p.stem for p in (ROOT / "recipes").glob("[!_]*.py"))
    assert all(ROOT not in p.parents for p in listed.values())


@pytest.mark.slow
def test_recipe_run_works_and_matches_its_expected_metrics(installed, tmp_path):
    done = _run(installed, tmp_path, "recipe", "run", "bundle_safetensors_f16", "--json")
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout)
    assert result["name"] == "bundle_safetensors_f16"
    assert result["metrics"] and result["expected"]["matches"] is True


@pytest.mark.slow
def test_installed_package_has_version_and_type_marker(installed, tmp_path):
    code = "import bundler, pathlib; print(bundler.__file__, bundler.__version__); "
    code += "print((pathlib.Path(bundler.__file__).parent / 'py.typed').is_file())"
    done = subprocess.run(
        [str(installed / "python"), "-c", code], capture_output=True, text=True, cwd=tmp_path
    )
    where, version, typed = done.stdout.split()
    assert Path(where).is_relative_to(installed.parent)
    assert version == _project_version() and typed == "True"
    assert _run(installed, tmp_path, "--version").stdout.strip() == f"bundler {version}"


def _project_version() -> str:
    found = re.search(r'^version = "([^"]+)"', (ROOT / "pyproject.toml").read_text(), re.M)
    assert found is not None
    return found.group(1)
