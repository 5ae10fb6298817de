"""What the console script changes in its own process to start faster: numba's BLAS
probe made to fail fast, and cached kernels loaded without installing every registry of
numba's compiler first. Each is a hook on one numba module's import (`_OnImport`)."""

from __future__ import annotations

import importlib.util
import sys
from collections.abc import Callable
from typing import Any

#: numba's module that probes for scipy's BLAS when its first kernel loads, and the probe.
_PROBING_MODULE = "numba.np.arraymath"
_PROBED_MODULE = "scipy.linalg.cython_blas"
#: numba's module holding the on-disk cache of compiled functions.
_CACHING_MODULE = "numba.core.caching"

#: How a hooked module's body runs: given the body (a function of no arguments) and the
#: module, it runs the body and does what it adds before or after.
Runner = Callable[[Callable[[], None], Any], None]


def skip_blas_probe() -> None:
    """Make numba's BLAS probe fail fast while `numba.np.arraymath` runs its module body,
    in this process (before numba loads its array functions).

    When scipy is installed, that probe imports `scipy.linalg` (0.3 s of CPU) for every
    process that loads a compiled kernel; bundler's kernels call no BLAS. The probe only
    decides whether numba's compiled `np.dot` of two vectors calls BLAS or a plain loop;
    `scipy.linalg` imports normally before and after.
    """
    if _PROBING_MODULE not in sys.modules and "scipy.linalg" not in sys.modules:
        sys.meta_path.insert(0, _OnImport(_PROBING_MODULE, _without_blas))


def _without_blas(body: Callable[[], None], module: Any) -> None:
    """`body` run with `_PROBED_MODULE` unimportable."""
    if _PROBED_MODULE in sys.modules:  # already imported: the probe costs nothing
        body()
        return
    sys.modules[_PROBED_MODULE] = None  # type: ignore[assignment]
    try:
        body()
    finally:
        if sys.modules.get(_PROBED_MODULE, ...) is None:
            del sys.modules[_PROBED_MODULE]


def load_cached_kernels_lazily() -> None:
    """Have numba load a cached kernel without refreshing its compiler's contexts first,
    in this process (installed before numba is imported; nothing when it already is).

    numba's `Cache.load_overload` refreshes the target context before loading: that
    imports and installs every typing and lowering registry of the compiler (0.1-0.2 s of
    CPU), which compiling needs and a cached kernel does not. Loading needs only numba's
    runtime (NRT) initialized. Compiling still refreshes both contexts itself (numba's
    `CompilerBase`), and a load that fails without the refresh is tried again with it."""
    if _CACHING_MODULE not in sys.modules:
        sys.meta_path.insert(0, _OnImport(_CACHING_MODULE, _then_patched))


def _then_patched(body: Callable[[], None], module: Any) -> None:
    body()
    _patch_load_overload(module)


def _patch_load_overload(caching: Any) -> None:
    cache = getattr(caching, "Cache", None)
    original = getattr(cache, "load_overload", None)
    needed = ("_load_overload", "_guard_against_spurious_io_errors")
    if original is None or not all(hasattr(cache, n) for n in needed):
        return  # a numba whose cache is laid out otherwise: left as it is

    def load_overload(self: Any, sig: Any, target_context: Any) -> Any:
        from numba.core.runtime import rtsys

        try:
            rtsys.initialize(target_context)
            with self._guard_against_spurious_io_errors():
                return self._load_overload(sig, target_context)
        except Exception:
            return original(self, sig, target_context)

    cache.load_overload = load_overload


class _OnImport:
    """Runs module `name`'s body through `run` when it is first imported (then steps
    aside for good). (A meta path finder by its `find_spec`: importlib.abc's base class
    would import importlib.resources, 15 ms of every command's start.)"""

    def __init__(self, name: str, run: Runner) -> None:
        self.name = name
        self.run = run

    def find_spec(self, name: str, path: Any = None, target: Any = None) -> Any:
        if name != self.name:
            return None
        sys.meta_path.remove(self)  # find the real spec
        spec = importlib.util.find_spec(name)
        if spec is not None and spec.loader is not None:
            spec.loader = _Running(spec.loader, self.run)
        return spec


class _Running:
    """A loader running another's module body through a `Runner`."""

    def __init__(self, loader: Any, run: Runner) -> None:
        self.loader = loader
        self.run = run

    def create_module(self, spec: Any) -> Any:
        return self.loader.create_module(spec)

    def exec_module(self, module: Any) -> None:
        self.run(lambda: self.loader.exec_module(module), module)
