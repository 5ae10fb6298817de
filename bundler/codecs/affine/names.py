"""What marks a codec name as affine (`int4`, `uint8:channel`, `int4:g128:asym:mse`: the
leading token int<B> or uint<B>) and a tensor as an affine weight's scales. Kept apart so
that telling names apart loads no codec."""

from __future__ import annotations

import re

#: What ends the name of a quantized weight's scales in the compressed-tensors layout (the
#: tensor a checkpoint's groups are found by).
SCALE_SUFFIX = ".weight_scale"

#: The leading token of an affine short string: "u" for unsigned, then the bits.
BITS = re.compile(r"(u?)int(\d+)")


def looks_affine(text: str) -> bool:
    """True when `text` is meant as an affine short string (starts with int<B> / uint<B>)."""
    head = text.strip().lower().split(":", 1)[0]
    return BITS.fullmatch(head) is not None
