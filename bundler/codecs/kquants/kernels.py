"""The K-quants' encode and decode kernels, as the codec registry takes them."""

from __future__ import annotations

import numpy as np

from bundler.codecs.facts import TABLE
from bundler.codecs.halfs import HALF_TO_F32
from bundler.codecs.kernels import Kernel, split_run, with_weighted
from bundler.codecs.kquants.common import QK
from bundler.codecs.kquants.decode import super_block_decoder
from bundler.codecs.kquants.encode import q8_k_encode, super_block_encoder


def _flat(a: np.ndarray) -> np.ndarray:
    if not a.flags.c_contiguous:
        raise ValueError("K-quant kernels need C-contiguous arrays")
    return a.reshape(-1)


#: The weights argument of the reference (unweighted) encoders, which ignore it.
_NO_WEIGHTS = np.zeros(1, np.float32)


def _encoder(compiled):
    def encode(src: np.ndarray, dst: np.ndarray, importance: np.ndarray = _NO_WEIGHTS) -> int:
        """Encode float32 rows into K-quant rows (with ggml's weighted search, given
        importance weights: float32, one per column); returns the count of non-finite
        blocks."""
        flat = _flat(src)
        count = flat.size // QK
        if compiled is q8_k_encode:
            return split_run(compiled, count, flat, _flat(dst), HALF_TO_F32)
        qw = _flat(importance)
        return split_run(compiled, count, flat, _flat(dst), HALF_TO_F32, qw, src.shape[-1])

    return encode


def _kernel(name: str) -> Kernel:
    compiled_decode = super_block_decoder(name)
    if name == "q8_k":
        encode = _encoder(q8_k_encode)
    else:
        encode = with_weighted(
            _encoder(super_block_encoder(name)),
            _encoder(super_block_encoder(name, weighted=True)),
            name,
        )

    def decode(raw: np.ndarray, dst: np.ndarray) -> None:
        """Decode K-quant rows into float32 rows."""
        compiled_decode(_flat(raw), _flat(dst), HALF_TO_F32)

    return Kernel(encode, decode)


KERNELS = {f.name: _kernel(f.name) for f in TABLE if f.kernels == __name__}
