"""The K-quants' encode and decode kernels, as the codec registry takes them. Importing
this module loads no compiler: each kernel is a `Compiled` reference, run from its native
entry when it has one."""

from __future__ import annotations

import numpy as np

from bundler.codecs.facts import BY_NAME, TABLE
from bundler.codecs.halftable import HALF_TO_F32
from bundler.codecs.kernels import Compiled, Kernel, split_run, with_weighted

QK = BY_NAME["q8_k"].block_size
_ENCODE = "bundler.codecs.kquants.encode"
_DECODE = "bundler.codecs.kquants.decode"


def _flat(a: np.ndarray) -> np.ndarray:
    if not a.flags.c_contiguous:
        raise ValueError("K-quant kernels need C-contiguous arrays")
    return a.reshape(-1)


#: The weights argument of the reference (unweighted) encoders, which ignore it.
_NO_WEIGHTS = np.zeros(1, np.float32)


def _encoder(compiled: Compiled, weighs: bool = True):
    def encode(src: np.ndarray, dst: np.ndarray, importance: np.ndarray = _NO_WEIGHTS) -> int:
        """Encode float32 rows into K-quant rows (with ggml's weighted search, given
        importance weights: float32, one per column); returns the count of non-finite
        blocks."""
        flat = _flat(src)
        count = flat.size // QK
        if not weighs:
            return split_run(compiled, count, flat, _flat(dst), HALF_TO_F32)
        qw = _flat(importance)
        return split_run(compiled, count, flat, _flat(dst), HALF_TO_F32, qw, src.shape[-1])

    return encode


def _kernel(name: str) -> Kernel:
    compiled_decode = Compiled(_DECODE, "super_block_decoder", name)
    if name == "q8_k":
        encode = _encoder(Compiled(_ENCODE, "q8_k_encode"), weighs=False)
    else:
        encode = with_weighted(
            _encoder(Compiled(_ENCODE, "super_block_encoder", name, False)),
            _encoder(Compiled(_ENCODE, "super_block_encoder", name, True)),
            name,
        )

    def decode(raw: np.ndarray, dst: np.ndarray) -> None:
        """Decode K-quant rows into float32 rows."""
        out = _flat(dst)
        split_run(compiled_decode, out.size // QK, _flat(raw), out, HALF_TO_F32)

    return Kernel(encode, decode)


KERNELS = {f.name: _kernel(f.name) for f in TABLE if f.kernels == __name__}
