"""The kernels of the codecs whose block is codes and one half scale (`halfscaled`: Q1_0,
Q2_0, TQ1_0, TQ2_0), as the codec registry takes them. Importing this module loads no
compiler: each kernel is a `Compiled` reference, run from its native entry when it has
one."""

from __future__ import annotations

from bundler.codecs.facts import BY_NAME
from bundler.codecs.halftable import HALF_TO_F32
from bundler.codecs.kernels import Compiled, Kernel, range_kernel

_MODULE = "bundler.codecs.halfscaled"
#: The codecs of this loop.
NAMES = ("q1_0", "q2_0", "tq1_0", "tq2_0")


def _kernel(name: str) -> Kernel:
    qk = BY_NAME[name].block_size
    encode, decode = Compiled(_MODULE, "encoder", name), Compiled(_MODULE, "decoder", name)
    # the ternary decoders' group width is an argument (qk // 8)
    return range_kernel(encode, decode, qk, BY_NAME[name].type_size, HALF_TO_F32, qk // 8)


KERNELS: dict[str, Kernel] = {name: _kernel(name) for name in NAMES}
