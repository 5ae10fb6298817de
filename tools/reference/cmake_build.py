"""Building one target of the vendored llama.cpp sources with cmake, cached and checked.

What `tools.reference.ggml_c` and the llama.cpp tools (`LlamaTool`) share: the toolchain
check, the build-once-under-a-lock cache, the cmake run, and the check that the sources
whose arithmetic is compared byte for byte are compiled without multiply-add fusion.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

from tools.reference import assets


class ToolchainMissing(RuntimeError):
    """cmake or a C/C++ compiler is not installed, so the reference cannot be built."""


class BuildFailed(RuntimeError):
    """cmake ran but did not produce a usable build."""


class NotBuilt(RuntimeError):
    """The build is not in the cache and building it was not allowed."""


#: Compiler flags that would let the compiler fuse multiply-adds in the reference quantizers.
FMA_FLAGS = ("-march=", "-mfma", "-ffp-contract=fast")


def check_toolchain() -> None:
    """Raise `ToolchainMissing` naming what to install when cmake, make or a compiler is absent."""
    missing = [tool for tool in ("cmake", "make") if shutil.which(tool) is None]
    cc = os.environ.get("CC") or next((c for c in ("cc", "gcc", "clang") if shutil.which(c)), None)
    cxx = os.environ.get("CXX") or next(
        (c for c in ("c++", "g++", "clang++") if shutil.which(c)), None
    )
    if cc is None:
        missing.append("a C compiler (gcc or clang)")
    if cxx is None:
        missing.append("a C++ compiler (g++ or clang++)")
    if missing:
        raise ToolchainMissing(
            "building the ggml C reference library needs "
            + ", ".join(missing)
            + " (e.g. `apt-get install cmake build-essential`)"
        )


def cached(
    target: Path,
    make: Callable[[Path], None],
    build: bool,
    module: str,
    label: str | None = None,
) -> Path:
    """`target`, made by `make(target)` on first call under a lock other processes respect.

    Raises `NotBuilt` (naming `python -m module`) when it is missing and `build` is False,
    and `ToolchainMissing` (prefixed with "`label` cannot be built" if given) before building.
    """
    if target.exists():
        return target
    if not build:
        raise NotBuilt(f"{target} is not built; run `python -m {module}`")
    try:
        check_toolchain()
    except ToolchainMissing as exc:
        if label is None:
            raise
        raise ToolchainMissing(f"{label} cannot be built: {exc}") from None
    with _locked(target.parent):  # another process may be building it
        if not target.exists():
            make(target)
    return target


@contextlib.contextmanager
def _locked(directory: Path) -> Iterator[None]:
    """Hold the lock of a cache directory (`cached`'s), made if missing."""
    directory.mkdir(parents=True, exist_ok=True)
    with open(directory / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        yield


def tool_env() -> dict[str, str]:
    """The environment llama.cpp's executables (llama-quantize, llama-imatrix) are built in:
    this process's, without SOURCE_DATE_EPOCH."""
    return {k: v for k, v in os.environ.items() if k != "SOURCE_DATE_EPOCH"}


@dataclass(frozen=True)
class LlamaTool:
    """One of llama.cpp's executables, built from the vendored sources with `options` and
    cached under `assets.cache_dir()/<name>/<tag>`; `module` is its `python -m` entry point,
    `label` (default: `name`) names it in errors."""

    name: str
    tag: str
    options: tuple[str, ...]
    exact_sources: tuple[str, ...]
    module: str
    label: str | None = None
    #: Other tools of the same options, built in the same cmake run as this one when they
    #: are not cached (a second tree would compile the same libraries again); called when
    #: building, so that the module defining them can import this one's options.
    companions: Callable[[], tuple[LlamaTool, ...]] | None = None

    def build_dir(self) -> Path:
        """Where the built tool of this version is cached."""
        return assets.cache_dir() / self.name / self.tag

    def cached_path(self) -> Path:
        """Where the executable is cached (whether or not it is built yet)."""
        return self.build_dir() / self.name

    def binary(self, build: bool = True) -> Path:
        """The cached executable, built on first call (raises as `cached` does)."""
        return cached(self.cached_path(), self._build, build, self.module, self.label or self.name)

    def _build(self, target: Path) -> None:
        prefix = self.module.rpartition(".")[2].replace("_", "-") + "-build-"
        more = {}
        for tool in self.companions() if self.companions else ():
            if tool.options != self.options:
                raise BuildFailed(f"{tool.name} is not built with {self.name}'s options")
            more[tool.name] = tool.cached_path()
        build_target(target, self.name, self.options, self.exact_sources, prefix, tool_env(),
                     more)  # fmt: skip

    def run(self, *args: str) -> subprocess.CompletedProcess:
        """Run the tool with `args` (built first if needed); raises on a non-zero exit."""
        cmd = [str(self.binary()), *args]
        done = subprocess.run(cmd, capture_output=True, text=True)
        if done.returncode:
            raise RuntimeError(f"{' '.join(cmd)} exited {done.returncode}:\n{done.stderr[-3000:]}")
        return done


def build_target(
    target: Path,
    cmake_target: str,
    options: Iterable[str],
    exact_sources: Iterable[str],
    prefix: str,
    env: dict[str, str] | None = None,
    companions: dict[str, Path] | None = None,
) -> None:
    """Configure and build `cmake_target` of the vendored llama.cpp with `options` in a
    temporary directory beside `target`, check `exact_sources` were compiled without FMA,
    and move the built file named like `target` into place; the same for each of the
    `companions` (cmake target: cached file) not cached yet, built in the same tree."""
    more = {name: path for name, path in (companions or {}).items() if not path.exists()}
    source = assets.llama_cpp_sdist() / "vendor" / "llama.cpp"
    with tempfile.TemporaryDirectory(prefix=prefix, dir=target.parent) as tmp:
        build = Path(tmp)
        jobs = str(os.cpu_count() or 1)
        steps = (
            ["cmake", "-S", str(source), "-B", str(build), *options],
            ["cmake", "--build", str(build), "--target", cmake_target, *more, "-j", jobs],
        )
        places = ", ".join(map(str, [target, *more.values()]))
        print(
            f"building {' and '.join([cmake_target, *more])} from llama.cpp's sources with "
            f"cmake, once (several minutes; cached as {places})",
            file=sys.stderr,
            flush=True,
        )
        for cmd in steps:
            done = subprocess.run(cmd, capture_output=True, text=True, env=env)
            if done.returncode:
                raise BuildFailed(f"{' '.join(cmd)} failed:\n{done.stdout[-2000:]}{done.stderr}")
        check_flags(build / "compile_commands.json", exact_sources, cmake_target)
        for place in more.values():
            with _locked(place.parent):  # the lock its own build would hold
                if not place.exists():
                    place_built(build, place)
        place_built(build, target)


def place_built(build: Path, target: Path) -> None:
    """Copy the built file named like `target` from the tree `build` into place (atomically)."""
    built = next((p for p in build.rglob(target.name) if p.is_file()), None)
    if built is None:
        raise BuildFailed(f"cmake finished but no {target.name} under {build}")
    part = target.with_name(target.name + ".part")
    shutil.copyfile(built.resolve(), part)
    part.chmod(0o755)
    os.replace(part, target)


def check_flags(commands: Path, exact_sources: Iterable[str], what: str) -> None:
    """Raise `BuildFailed` unless every file of `exact_sources` is in the compile commands
    without a flag of `FMA_FLAGS`."""
    wanted = set(exact_sources)
    seen = set()
    for entry in json.loads(commands.read_text()):
        name = Path(entry["file"]).name
        if name in wanted:
            bad = [f for f in entry["command"].split() if f.startswith(FMA_FLAGS)]
            if bad:
                raise BuildFailed(f"{name} would be compiled with {bad}: FMA possible")
            seen.add(name)
    missing = wanted - seen
    if missing:
        raise BuildFailed(f"{sorted(missing)} missing from the {what} build")


def print_built(find: Callable[[], Path]) -> int:
    """The exit status of a `python -m` entry point: print the path `find` returns, or why
    it could not be built."""
    try:
        path = find()
    except (ToolchainMissing, BuildFailed, assets.AssetUnavailable) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print(path)
    return 0
