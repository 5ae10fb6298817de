"""Shared fixtures: real model files from the package index, and the CLI runner."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

#: Requirement names whose import name differs (the rest: the name, "-" as "_").
IMPORT_NAMES = {
    "pyyaml": "yaml",
    "onnx-ir": "onnx_ir",
    "faiss-cpu": "faiss",
    "pytest-xdist": "xdist",
}
PYPROJECT = Path(__file__).resolve().parents[1] / "pyproject.toml"


def missing_requirements(pyproject: dict, extras: tuple[str, ...] = ("dev",)) -> list[str]:
    """The requirements of `pyproject` (bundler's own and those of `extras`) that this
    interpreter cannot import; those with an environment marker are not checked."""
    import importlib.util
    import re

    project = pyproject["project"]
    wanted = [*project["dependencies"]]
    for extra in extras:
        wanted += project["optional-dependencies"][extra]
    missing = []
    for requirement in wanted:
        if ";" in requirement:
            continue
        name = re.match(r"[A-Za-z0-9_.-]+", requirement).group(0).lower()
        if importlib.util.find_spec(IMPORT_NAMES.get(name, name.replace("-", "_"))) is None:
            missing.append(name)
    return missing


def _require_installed() -> None:
    """Stop with one line saying what to install when this interpreter lacks bundler's
    requirements (instead of an import error per test module)."""
    try:
        import tomllib
    except ModuleNotFoundError:  # Python 3.10: tomli is itself a requirement there
        return
    missing = missing_requirements(tomllib.loads(PYPROJECT.read_text(encoding="utf-8")))
    if missing:
        pytest.exit(
            f"{sys.executable} cannot import {', '.join(missing)}, which the tests need: "
            "install them as the README says (python3 -m venv .venv && .venv/bin/pip "
            'install -e ".[dev]") and run .venv/bin/python -m pytest',
            returncode=pytest.ExitCode.USAGE_ERROR,
        )


def pytest_addoption(parser: pytest.Parser, pluginmanager: pytest.PytestPluginManager) -> None:
    """Without pytest-xdist (not installed, or `-p no:xdist`), its options in the configured
    `addopts` (`-n`, `--dist`) are accepted here and do nothing: `pytest_configure` then says
    what to install, or the tests run in one process, instead of pytest stopping at
    "unrecognized arguments"."""
    import importlib.util

    if importlib.util.find_spec("xdist") is None or pluginmanager.is_blocked("xdist"):
        # pytest reserves lowercase short options; `_addoption` is how xdist itself adds -n
        group = parser.getgroup("xdist", "pytest-xdist absent or disabled: -n, --dist do nothing")
        group._addoption("-n", dest="numprocesses", default=None)
        group.addoption("--dist", dest="dist", default=None)


def pytest_configure(config: pytest.Config) -> None:
    _require_installed()


try:
    from tools.reference import assets
except ModuleNotFoundError:  # a requirement missing: pytest_configure says which
    assets = None

#: In CI every real-file test must run: a missing file fails instead of skipping.
IN_CI = os.environ.get("CI") == "true"


def _asset(fetch):
    try:
        return fetch()
    except assets.AssetUnavailable as exc:
        if IN_CI:
            raise
        pytest.skip(f"real file unavailable ({exc}); needs network access to the package index")


def reference_tool(make: Callable[[], Path], what: str) -> Path:
    """`make()`, which builds a tool from llama.cpp's sources (or runs one): without cmake, a
    compiler or the sources the test skips saying so; in CI it fails."""
    from tools.reference.cmake_build import ToolchainMissing

    try:
        return make()
    except (ToolchainMissing, assets.AssetUnavailable) as exc:
        if IN_CI:
            pytest.fail(f"{what} unavailable in CI: {exc}")
        pytest.skip(f"{what} unavailable: {exc}")


@pytest.fixture(scope="session")
def smollm2_gguf() -> Path:
    """SmolLM2-135M-Instruct.Q4_1.gguf, written by llama.cpp's own tools."""
    return _asset(assets.smollm2_gguf)


@pytest.fixture(scope="session")
def smollm2_f32_gguf(smollm2_gguf, tmp_path_factory) -> Path:
    """SmolLM2's Q4_1 file decoded to an F32 GGUF by `bundler quantize --type f32` (every
    value of its quantized weights is exactly representable in Q4_1 again)."""
    out = tmp_path_factory.mktemp("smollm2-f32") / "SmolLM2-135M-Instruct.F32.gguf"
    run_cli("quantize", str(smollm2_gguf), "--type", "f32", "-q", "-o", str(out), check=True)
    return out


@pytest.fixture(scope="session")
def minilm_safetensors() -> Path:
    """all-MiniLM-L6-v2 model.safetensors, written by the reference serializer."""
    return _asset(assets.minilm_safetensors)


@pytest.fixture(scope="session")
def vocab_ggufs() -> list[Path]:
    """llama.cpp's ggml-vocab-*.gguf files."""
    return _asset(assets.vocab_ggufs)


@pytest.fixture(scope="session")
def silero_vad_onnx() -> dict[str, Path]:
    """Silero VAD's ONNX models (from the `silero-vad` wheel) by file name."""
    return _asset(assets.silero_vad_onnx)


@pytest.fixture(scope="session")
def llama_quantize() -> Path:
    """The llama-quantize executable, built and cached on first use."""
    from tools.reference import llama_quantize

    return reference_tool(llama_quantize.binary, "llama-quantize")


@pytest.fixture(scope="session")
def real_imatrix() -> Path:
    """SmolLM2-135M's importance matrix as llama-imatrix writes it by default (GGUF),
    computed once by the reference tool built from llama.cpp's sources."""
    from tools.reference import llama_imatrix

    return reference_tool(lambda: llama_imatrix.smollm2_matrix("gguf"), "reference tool")


@pytest.fixture(scope="session")
def llama_perplexity() -> Path:
    """The llama-perplexity executable, built and cached on first use."""
    from tools.reference import llama_perplexity

    return reference_tool(llama_perplexity.binary, "llama-perplexity")


def run_cli(*args: str, check: bool = False, **kwargs) -> subprocess.CompletedProcess:
    """Run the installed `bundler` command in a subprocess."""
    exe = Path(sys.executable).with_name("bundler")
    cmd = [str(exe)] if exe.exists() else [sys.executable, "-m", "bundler"]
    done = subprocess.run([*cmd, *args], capture_output=True, text=True, **kwargs)
    if check and done.returncode:
        raise AssertionError(f"bundler {' '.join(args)} exited {done.returncode}: {done.stderr}")
    return done


def run_cli_clean(*args: str, **kwargs) -> subprocess.CompletedProcess:
    """`run_cli` for a run that must end without a traceback, whatever its exit code."""
    done = run_cli(*args, **kwargs)
    assert "Traceback" not in done.stderr
    return done


def run_cli_json(*args: str) -> tuple[int, dict]:
    """Run `bundler ARGS --json` (without a traceback): its exit code and the report it
    printed."""
    done = run_cli_clean(*args, "--json")
    return done.returncode, json.loads(done.stdout)


def _extra(module: str, package: str, extra: str) -> None:
    """Skip (fail in CI, which installs every extra) when `module` of an extra is missing."""
    import importlib

    try:
        importlib.import_module(module)
    except ImportError:
        if IN_CI:
            pytest.fail(f"{package} is not installed in CI (the `{extra}` extra)")
        pytest.skip(f"{package} is not installed (pip install 'bundler[{extra}]')")


@pytest.fixture(scope="session")
def llama_runtime() -> None:
    """llama-cpp-python (the `llama` extra)."""
    _extra("llama_cpp", "llama-cpp-python", "llama")


@pytest.fixture(scope="session")
def plot_extra() -> None:
    """matplotlib (the `plot` extra)."""
    _extra("matplotlib", "matplotlib", "plot")


def llama_cpp_text(name: str) -> Path:
    """A text file of llama.cpp's source distribution (docs/build.md, README.md)."""
    try:
        root = assets.llama_cpp_sdist()
    except assets.AssetUnavailable as exc:
        if IN_CI:
            raise
        pytest.skip(f"llama.cpp sources unavailable: {exc}")
    return root / "vendor" / "llama.cpp" / name


@pytest.fixture(scope="session")
def build_md() -> Path:
    """llama.cpp's docs/build.md from the source distribution: a real text of about 12,000
    tokens."""
    return llama_cpp_text("docs/build.md")


@pytest.fixture(scope="session")
def readme_md() -> Path:
    """llama.cpp's README.md from the source distribution (about 2,900 SmolLM2 tokens): the
    text llama-imatrix's cached SmolLM2 matrix is computed on."""
    return llama_cpp_text("README.md")


def env_without(tmp_path: Path, *modules: str) -> dict[str, str]:
    """The environment of a CLI run in which importing any of `modules` fails, as if the
    optional extra that provides it were not installed."""
    blocker = tmp_path / "blocker"
    for name in modules:
        (blocker / name).mkdir(parents=True)
        refusal = f"raise ImportError('No module named {name}')\n"
        (blocker / name / "__init__.py").write_text(refusal)
    return dict(os.environ, PYTHONPATH=str(blocker))
