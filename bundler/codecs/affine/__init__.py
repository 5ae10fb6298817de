"""Affine integer codecs (int2..int16, symmetric or with a zero point, per tensor, channel or
group) and their calibration.

`AffineCodec(config)` is a codec whose configuration is its identity; `calibrate` chooses
ranges, scales and zero points on its own; `packing` holds the nibble and int32 layouts.
"""

from bundler.codecs.affine.calibration import MSE, Entropy, MeanStd, Method, MinMax, Percentile
from bundler.codecs.affine.codec import AffineCodec, Calibration, Encoded, calibrate, dequantize
from bundler.codecs.affine.scheme import Scheme, SchemeError, from_config, looks_affine, parse

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
