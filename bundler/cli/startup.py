"""What the console script changes in its own process to start faster."""

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
