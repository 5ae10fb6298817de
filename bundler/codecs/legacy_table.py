"""The legacy block codecs' kernels (`legacy`), as the codec registry takes them. Importing
this module loads no compiler: each kernel is a `Compiled` reference, run from its native
entry when it has one, the encoders on block ranges shared by the threads in effect."""

from __future__ import annotations

import numpy as np

from bundler.codecs.facts import BY_NAME
from bundler.codecs.halftable import HALF_TO_F32
from bundler.codecs.kernels import Compiled, Kernel, split_run, with_weighted

_MODULE = "bundler.codecs.legacy"
_WEIGHTED = Compiled(_MODULE, "encode_weighted")


def _kernel(name: str, encoder: str, decoder: str, variant, affine=None) -> Kernel:
    """Bind a family's kernels to one codec: its variant (bits, or Q8's sum) and its block
    bytes from the facts table (the codes are always the block's last bytes); with
    importance weights, the weighted encoder (codecs whose facts take them)."""
    size = BY_NAME[name].type_size
    qk = BY_NAME[name].block_size
    encode, decode = Compiled(_MODULE, encoder), Compiled(_MODULE, decoder)
    decode_args = (variant, size) if affine is None else (variant, affine, size)
    # the Q8 decoder's loop vectorises with the block size at run time, the nibbles' as is
    decode_args += (HALF_TO_F32,) + ((qk,) if affine is None else ())

    def enc(src: np.ndarray, dst: np.ndarray) -> int:
        flat = src.reshape(-1)
        return split_run(encode, flat.size // qk, flat, dst.reshape(-1), variant, size, qk)

    def weighted(src: np.ndarray, dst: np.ndarray, importance: np.ndarray) -> int:
        flat = src.reshape(-1)
        return split_run(
            _WEIGHTED, flat.size // qk, flat, dst.reshape(-1), importance,
            src.shape[-1], variant, size, affine,
        )  # fmt: skip

    def dec(raw: np.ndarray, dst: np.ndarray) -> None:
        flat = raw.reshape(-1)
        split_run(decode, flat.size // size, flat, dst.reshape(-1), *decode_args)

    if BY_NAME[name].takes_importance:
        enc = with_weighted(enc, weighted, name)
    return Kernel(enc, dec)


KERNELS: dict[str, Kernel] = {
    "q4_0": _kernel("q4_0", "encode_symmetric", "decode_nibbles", 4, False),
    "q5_0": _kernel("q5_0", "encode_symmetric", "decode_nibbles", 5, False),
    "q4_1": _kernel("q4_1", "encode_affine", "decode_nibbles", 4, True),
    "q5_1": _kernel("q5_1", "encode_affine", "decode_nibbles", 5, True),
    "q8_0": _kernel("q8_0", "encode_q8", "decode_q8", False),
    "q8_1": _kernel("q8_1", "encode_q8", "decode_q8", True),
}
