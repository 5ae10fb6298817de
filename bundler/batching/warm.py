"""Imported once by the server process that local batch workers are forked from: the
kernels' modules and the compiler's code generator are loaded there, so that no worker
pays for them again (about 2 s each), and no compiler thread is started before the fork."""

from __future__ import annotations

import contextlib
import importlib

from bundler.codecs import all_codecs

for _name in sorted({c.facts.kernels for c in all_codecs() if c.facts.kernels}):
    importlib.import_module(_name)

with contextlib.suppress(ImportError, AttributeError):  # the compiler's layout may change
    from numba.core.registry import cpu_target

    cpu_target.target_context.refresh()
