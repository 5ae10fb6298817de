"""Kernels of the i-quants bundler encodes: IQ4_NL and IQ4_XS (`iq4`), IQ3_XXS and IQ3_S
(`iq3`, on the lattices of `grid4`), byte-exact with ggml's `quantize_<type>` with or without
an importance matrix (one weight per column, ggml's `quant_weights`), and their decoders."""

from __future__ import annotations

import numpy as np

from bundler.codecs.facts import BY_NAME
from bundler.codecs.halfs import HALF_TO_F32
from bundler.codecs.iquants import grid4, iq3, iq4
from bundler.codecs.kernels import Kernel, range_kernel, split_run


def _kernel(name: str, encoder, decoder, *decode_args) -> Kernel:
    facts = BY_NAME[name]
    return range_kernel(
        encoder, decoder, facts.block_size, facts.type_size, HALF_TO_F32, *decode_args
    )


def _lattice_kernel(name: str, kind: int, decoder, *decode_args) -> Kernel:
    """IQ3_XXS's or IQ3_S's kernel: the encoder over its lattice (built on first use), which
    returns -(1 + first value) of the first block the C library aborts on."""
    size = grid4.SIZE[name]
    none = np.empty(0, np.float32)

    def encode(src: np.ndarray, dst: np.ndarray, importance: np.ndarray | None = None) -> int:
        tables = grid4.lattice(size)
        flat, out = src.reshape(-1), dst.reshape(-1)
        weights = none if importance is None else importance
        aborts: list[int] = []

        def run(lo: int, hi: int) -> int:
            found = iq3.encode(kind, flat, out, weights, src.shape[-1], lo, hi, *tables)
            if found < 0:
                aborts.append(-found - 1)
                return 0
            return found

        bad = split_run(run, flat.size // iq3.QK)
        return -(1 + min(aborts) * iq3.QK) if aborts else bad

    return _kernel(name, None, decoder, *decode_args)._replace(encode=encode)


KERNELS: dict[str, Kernel] = {
    "iq4_nl": _kernel("iq4_nl", iq4.encode_nl, iq4.decode_nl),
    "iq4_xs": _kernel("iq4_xs", iq4.encode_xs, iq4.decode_xs),
    "iq3_xxs": _lattice_kernel(
        "iq3_xxs", iq3.XXS, iq3.decode_xxs, grid4.decoded("iq3_xxs"), iq3.SIGNS
    ),
    "iq3_s": _lattice_kernel("iq3_s", iq3.S, iq3.decode_s, grid4.decoded("iq3_s")),
}
