"""What the console script changes in its own process to start faster: numba's BLAS
probe made to fail fast, and cached kernels loaded without installing every registry of
numba's compiler first."""

from __future__ import annotations

import importlib.abc
import importlib.util
import sys
from typing import Any

#: numba's module that probes for scipy's BLAS when its first kernel loads, and the probe.
_PROBING_MODULE = "numba.np.arraymath"
_PROBED_MODULE = "scipy.linalg.cython_blas"


class _SkipBlasProbe(importlib.abc.MetaPathFinder):
    """Makes numba's BLAS probe fail fast while `numba.np.arraymath` runs its module body.

    When scipy is installed, that probe imports `scipy.linalg` (0.3 s of CPU) for every
    process that loads a compiled kernel; bundler's kernels call no BLAS. The probe only
    decides whether numba's compiled `np.dot` of two vectors calls BLAS or a plain loop;
    `scipy.linalg` imports normally before and after.
    """

    def find_spec(self, name: str, path: Any = None, target: Any = None) -> Any:
        if name != _PROBING_MODULE:
            return None
        sys.meta_path.remove(self)  # find the real spec, and step aside for good
        spec = importlib.util.find_spec(name)
        if spec is not None and spec.loader is not None:
            spec.loader = _Blocking(spec.loader)
        return spec


class _Blocking(importlib.abc.Loader):
    """A loader running another's module body with `_PROBED_MODULE` unimportable."""

    def __init__(self, loader: importlib.abc.Loader) -> None:
        self.loader = loader

    def create_module(self, spec: Any) -> Any:
        return self.loader.create_module(spec)

    def exec_module(self, module: Any) -> None:
        if _PROBED_MODULE in sys.modules:  # already imported: the probe costs nothing
            self.loader.exec_module(module)
            return
        sys.modules[_PROBED_MODULE] = None  # type: ignore[assignment]
        try:
            self.loader.exec_module(module)
        finally:
            if sys.modules.get(_PROBED_MODULE, ...) is None:
                del sys.modules[_PROBED_MODULE]


def skip_blas_probe() -> None:
    """Install the finder for this process (before numba loads its array functions)."""
    if _PROBING_MODULE not in sys.modules and "scipy.linalg" not in sys.modules:
        sys.meta_path.insert(0, _SkipBlasProbe())


#: numba's module holding the on-disk cache of compiled functions.
_CACHING_MODULE = "numba.core.caching"


def load_cached_kernels_lazily() -> None:
    """Have numba load a cached kernel without refreshing its compiler's contexts first,
    in this process (installed before numba is imported; nothing when it already is).

    numba's `Cache.load_overload` refreshes the target context before loading: that
    imports and installs every typing and lowering registry of the compiler (0.1-0.2 s of
    CPU), which compiling needs and a cached kernel does not. Loading needs only numba's
    runtime (NRT) initialized. Compiling still refreshes both contexts itself (numba's
    `CompilerBase`), and a load that fails without the refresh is tried again with it."""
    if _CACHING_MODULE not in sys.modules:
        sys.meta_path.insert(0, _AfterImport(_CACHING_MODULE, _patch_load_overload))


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


class _AfterImport(importlib.abc.MetaPathFinder):
    """Calls `then(module)` once module `name` has run its body (then steps aside)."""

    def __init__(self, name: str, then: Any) -> None:
        self.name = name
        self.then = then

    def find_spec(self, name: str, path: Any = None, target: Any = None) -> Any:
        if name != self.name:
            return None
        sys.meta_path.remove(self)
        spec = importlib.util.find_spec(name)
        if spec is not None and spec.loader is not None:
            spec.loader = _Then(spec.loader, self.then)
        return spec


class _Then(importlib.abc.Loader):
    """A loader running another's module body, then a function of the module."""

    def __init__(self, loader: importlib.abc.Loader, then: Any) -> None:
        self.loader = loader
        self.then = then

    def create_module(self, spec: Any) -> Any:
        return self.loader.create_module(spec)

    def exec_module(self, module: Any) -> None:
        self.loader.exec_module(module)
        self.then(module)
