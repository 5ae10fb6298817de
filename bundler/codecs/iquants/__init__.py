"""Kernels of the i-quants bundler encodes: IQ4_NL and IQ4_XS (`iq4`), byte-exact with
ggml's `quantize_iq4_nl` / `quantize_iq4_xs` with or without an importance matrix (one
weight per column, ggml's `quant_weights`), and their decoders."""

from __future__ import annotations

from bundler.codecs.facts import BY_NAME
from bundler.codecs.halfs import HALF_TO_F32
from bundler.codecs.iquants import iq4
from bundler.codecs.kernels import Kernel, range_kernel


def _kernel(name: str, encoder, decoder) -> Kernel:
    facts = BY_NAME[name]
    return range_kernel(encoder, decoder, facts.block_size, facts.type_size, HALF_TO_F32)


KERNELS: dict[str, Kernel] = {
    "iq4_nl": _kernel("iq4_nl", iq4.encode_nl, iq4.decode_nl),
    "iq4_xs": _kernel("iq4_xs", iq4.encode_xs, iq4.decode_xs),
}
