"""Affine integer codecs (int2..int16, symmetric or with a zero point, per tensor, channel or
group) and their calibration.

`AffineCodec(config)` is a codec whose configuration is its identity; `calibrate` chooses
ranges, scales and zero points on its own; `packing` holds the nibble and int32 layouts.
"""

from __future__ import annotations

import importlib

TYPE_CHECKING = False
if TYPE_CHECKING:
    from bundler.codecs.affine.calibration import (
        MSE,
        Entropy,
        MeanStd,
        Method,
        MinMax,
        Percentile,
    )
    from bundler.codecs.affine.codec import (
        AffineCodec,
        Calibration,
        Encoded,
        calibrate,
        dequantize,
    )
    from bundler.codecs.affine.names import looks_affine
    from bundler.codecs.affine.scheme import Scheme, SchemeError, from_config, parse

#: Where each public name lives, imported on first use: telling an affine name apart
#: (`looks_affine`) loads neither the codec nor its calibration.
_LAZY = {
    **dict.fromkeys(("MSE", "Entropy", "MeanStd", "Method", "MinMax", "Percentile"), "calibration"),
    **dict.fromkeys(("AffineCodec", "Calibration", "Encoded", "calibrate", "dequantize"), "codec"),
    **dict.fromkeys(("Scheme", "SchemeError", "from_config", "parse"), "scheme"),
    "looks_affine": "names",
}


def __getattr__(name: str) -> object:
    if name not in _LAZY:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f"{__name__}.{_LAZY[name]}"), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})


__all__ = [
    "MSE",
    "AffineCodec",
    "Calibration",
    "Encoded",
    "Entropy",
    "MeanStd",
    "Method",
    "MinMax",
    "Percentile",
    "Scheme",
    "SchemeError",
    "calibrate",
    "dequantize",
    "from_config",
    "looks_affine",
    "parse",
]
