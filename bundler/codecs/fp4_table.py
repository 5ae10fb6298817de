"""MXFP4's and NVFP4's kernels (`fp4`), as the codec registry takes them. Importing this
module loads no compiler: each kernel is a `Compiled` reference, run from its native entry
when it has one."""

from __future__ import annotations

from bundler.codecs.facts import BY_NAME
from bundler.codecs.kernels import Compiled, Kernel, range_kernel

_MODULE = "bundler.codecs.fp4"


def _kernel(name: str, nv: bool) -> Kernel:
    facts = BY_NAME[name]
    return range_kernel(
        Compiled(_MODULE, "encoder", nv),
        Compiled(_MODULE, "decoder", nv),
        facts.block_size,
        facts.type_size,
    )


KERNELS: dict[str, Kernel] = {"mxfp4": _kernel("mxfp4", False), "nvfp4": _kernel("nvfp4", True)}
