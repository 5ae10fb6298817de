"""Scales, zero points, codes and values of affine quantization (PyTorch / ONNX conventions).

    quantize:   q  = clamp(round_half_even(x / scale) + zero_point, qmin, qmax)
    dequantize: x' = (q - zero_point) * scale

Ranges are widened to include 0 so that 0.0 is exactly representable, then (as
compressed-tensors and PyTorch's observers do):

    symmetric:  scale = max(-lo, hi) / ((qmax - qmin) / 2),   zero_point = 0
    asymmetric: scale = (hi - lo) / (qmax - qmin),
                zero_point = clamp(round_half_even(qmin - lo / scale), qmin, qmax)

Symmetric codes have a second scale rule, `extreme` (ONNX Runtime's 4-bit block quantizer,
`MatMulNBitsQuantizer`, and GGML's Q4_0): scale = e / qmin, where e is the value of largest
magnitude (lo on a tie), so that e is code qmin exactly (-8 for int4) and all 2^B codes
are in use; the scale is negative when e is positive.

The scale is rounded to its storage dtype first; the zero point and the codes are computed
from the stored scale, in float64 (the codes' quotient in float32 on request,
`DIVISIONS`). A slice whose calibrated range is one value c (all its
values equal) gets scale |c| (1 when c is 0), so c is code +-1 (or 0) and decodes exactly
when |c| is representable in the scale dtype.
"""

from __future__ import annotations

import ml_dtypes
import numpy as np

from bundler.codecs.facts import TABLE
from bundler.errors import UsageError

#: The float codecs a scale may be stored as, and their numpy dtypes.
SCALE_DTYPES = ("f32", "f16", "bf16")
#: Scale rules of symmetric codes: compressed-tensors' (the default), then `extreme`.
RULES = ("half_range", "extreme")
#: Where the quotient x / scale of the codes is taken: float64 (exact, the default), or
#: float32 as ONNX QuantizeLinear takes it (they differ only where the float32 quotient
#: lands on a half-integer).
DIVISIONS = ("f64", "f32")
SCALE_NUMPY = {
    f.name: np.dtype(f.numpy_dtype).newbyteorder("=") for f in TABLE if f.name in SCALE_DTYPES
}


def code_dtype(bits: int, symmetric: bool) -> np.dtype:
    """The smallest numpy integer dtype that holds the codes."""
    if bits <= 8:
        return np.dtype(np.int8 if symmetric else np.uint8)
    return np.dtype(np.int16 if symmetric else np.uint16)


def parameters(
    lo: np.ndarray,
    hi: np.ndarray,
    qmin: int,
    qmax: int,
    symmetric: bool,
    scale_dtype: str,
    rule: str = RULES[0],
) -> tuple[np.ndarray, np.ndarray]:
    """Scales (in the storage dtype) and zero points (int64) for calibrated ranges."""
    lo = np.asarray(lo, dtype=np.float64)
    hi = np.asarray(hi, dtype=np.float64)
    constant = lo == hi
    lo0 = np.minimum(lo, 0.0)
    hi0 = np.maximum(hi, 0.0)
    if symmetric and rule == "extreme":
        scale = np.where(-lo0 >= hi0, lo0, hi0) / qmin
    elif symmetric:
        scale = np.maximum(-lo0, hi0) / ((qmax - qmin) / 2)
    else:
        scale = (hi0 - lo0) / (qmax - qmin)
    scale = np.where(constant, np.abs(lo), scale)
    scale = np.where(scale == 0, 1.0, scale)
    stored = _stored(scale, scale_dtype)
    if symmetric:
        zero = np.zeros(stored.shape, dtype=np.int64)
    else:
        s = stored.astype(np.float64)
        zero = np.clip(np.rint(qmin - lo0 / s), qmin, qmax).astype(np.int64)
    return stored, zero


def _stored(scale: np.ndarray, scale_dtype: str) -> np.ndarray:
    dtype = SCALE_NUMPY[scale_dtype]
    with np.errstate(over="ignore"):
        stored = scale.astype(np.float32).astype(dtype) if dtype != np.float32 else None
        if stored is None:
            stored = scale.astype(np.float32)
    if not np.all(np.isfinite(stored.astype(np.float32))):
        worst = float(scale.max())
        raise UsageError(f"a scale of {worst:g} does not fit {scale_dtype} scales")
    # a range too small for the dtype would give a zero scale
    tiny = np.array(ml_dtypes.finfo(dtype).smallest_subnormal, dtype=dtype)
    return np.where(stored.astype(np.float32) == 0, tiny, stored).astype(dtype)


def dequantize(codes: np.ndarray, scale: np.ndarray, zero_point: np.ndarray | None) -> np.ndarray:
    """`(codes - zero_point) * scale` in float32, with the parameters already broadcastable."""
    q = codes.astype(np.float32)
    if zero_point is not None:
        q -= zero_point.astype(np.float32)
    q *= scale.astype(np.float32)
    return q
