"""Weight quantization arithmetic, in ONNX QuantizeLinear's terms (one small module, to be
replaced by the affine codec family in bundler/codecs/affine once it lands):

    q  = saturate(round_half_even(x / scale) + zero_point)   (QuantizeLinear)
    x' = (q - zero_point) * scale                             (DequantizeLinear)

Ranges are widened to include 0 so that 0.0 is exact; symmetric (signed codes, zero point
0): scale = e / qmin where e is the value of largest magnitude (so e is code qmin, -8 for
int4: all 2^B codes in use, as ONNX Runtime's own 4-bit quantizer does; the scale is
negative when e is positive); asymmetric (unsigned codes): scale = (hi - lo) / (qmax -
qmin), zero_point = saturate(round_half_even(qmin - lo / scale)).
A slice whose range is one value c gets scale |c| (1 when c is 0). Scales are stored in
the weight's float type; codes are computed from the stored scale in float32, as
QuantizeLinear does.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from bundler.codecs.affine.packing import IntegerCodes

#: float32 weights of at least this many values go through the compiled loop (smaller ones
#: through numpy: loading the compiler would cost more than it saves).
COMPILED_MIN_VALUES = 1 << 18


@dataclass(frozen=True)
class Scheme(IntegerCodes):
    """Bits, signedness and granularity of one weight's codes."""

    bits: int = 8
    signed: bool = True
    granularity: str = "tensor"  # "tensor", "channel" or "block"
    block_size: int = 0

    @property
    def type_name(self) -> str:
        return f"{'' if self.signed else 'u'}int{self.bits}"

    def describe(self) -> str:
        if self.granularity == "block":
            return f"{self.type_name} blocks of {self.block_size}"
        return f"{self.type_name} per {self.granularity}"


@dataclass
class Quantized:
    """Codes (int8/uint8 numpy, one per value), scales in the weight's dtype shaped for
    DequantizeLinear (scalar, 1-D along the axis, or the blocked shape), zero points
    (None when symmetric) and the axis."""

    codes: np.ndarray
    scale: np.ndarray
    zero_point: np.ndarray | None
    axis: int | None


def parameters(
    lo: np.ndarray, hi: np.ndarray, scheme: Scheme, dtype: np.dtype
) -> tuple[np.ndarray, np.ndarray | None]:
    """Scales (stored in `dtype`) and zero points (None when symmetric) of slice ranges."""
    lo = np.asarray(lo, np.float64)
    hi = np.asarray(hi, np.float64)
    lo0, hi0 = np.minimum(lo, 0.0), np.maximum(hi, 0.0)
    qmin, qmax = scheme.qmin, scheme.qmax
    # signed: the value of largest magnitude maps to qmin exactly, so every code is used
    # (the scale is negative when that value is positive)
    extreme = np.where(-lo0 >= hi0, lo0, hi0)
    scale = extreme / qmin if scheme.signed else (hi0 - lo0) / (qmax - qmin)
    scale = np.where(lo == hi, np.abs(lo), scale)  # one value c: code +-1 (or 0)
    scale = np.where(scale == 0, 1.0, scale)
    stored = scale.astype(np.float32).astype(dtype)
    # a range too small for the dtype rounds to 0: use its smallest step instead
    stored = np.where(stored.astype(np.float32) == 0, np.finfo(np.float32).tiny, stored)
    stored = stored.astype(dtype)
    if scheme.signed:
        return stored, None
    zero = np.clip(np.rint(qmin - lo0 / stored.astype(np.float64)), qmin, qmax)
    return stored, zero.astype(np.uint8)


def codes(x: np.ndarray, scale: np.ndarray, zero: np.ndarray | None, scheme: Scheme) -> np.ndarray:
    """QuantizeLinear: round half to even, add the zero point, saturate (broadcasting)."""
    q = np.rint(x.astype(np.float32) / scale.astype(np.float32))
    if zero is not None:
        q += zero.astype(np.float32)
    np.clip(q, scheme.qmin, scheme.qmax, out=q)
    return q.astype(np.int8 if scheme.signed else np.uint8)


def dequantize(q: np.ndarray, scale: np.ndarray, zero: np.ndarray | None) -> np.ndarray:
    """DequantizeLinear with broadcastable parameters, in float32."""
    x = q.astype(np.float32)
    if zero is not None:
        x -= zero.astype(np.float32)
    return x * scale.astype(np.float32)


def quantize(x: np.ndarray, scheme: Scheme, axis: int | None = None) -> Quantized:
    """Quantize `x` per tensor, per channel along `axis`, or in blocks along `axis`."""
    dtype = x.dtype
    if dtype == np.float32 and x.size >= COMPILED_MIN_VALUES:
        return _compiled(x, scheme, axis)
    if scheme.granularity == "tensor":
        scale, zero = parameters(x.min(), x.max(), scheme, dtype)
        return Quantized(codes(x, scale, zero, scheme), scale, zero, None)
    axis = axis % x.ndim
    if scheme.granularity == "channel":
        others = tuple(a for a in range(x.ndim) if a != axis)
        scale, zero = parameters(x.min(axis=others), x.max(axis=others), scheme, dtype)
        shape = [1] * x.ndim
        shape[axis] = -1
        zb = zero.reshape(shape) if zero is not None else None
        return Quantized(codes(x, scale.reshape(shape), zb, scheme), scale, zero, axis)
    return _blocked(x, scheme, axis)


def _blocked(x: np.ndarray, scheme: Scheme, axis: int) -> Quantized:
    size = scheme.block_size
    moved = np.ascontiguousarray(np.moveaxis(x, axis, -1))  # blocks contiguous in memory
    k = moved.shape[-1]
    blocks = -(-k // size)
    if blocks * size != k:
        # the last block is padded with its own last value: the range stays the block's own
        pad = np.repeat(moved[..., -1:], blocks * size - k, axis=-1)
        moved = np.concatenate([moved, pad], axis=-1)
    grouped = moved.reshape(*moved.shape[:-1], blocks, size)
    scale, zero = parameters(grouped.min(axis=-1), grouped.max(axis=-1), scheme, x.dtype)
    zb = zero[..., None] if zero is not None else None
    q = codes(grouped, scale[..., None], zb, scheme).reshape(*moved.shape[:-1], blocks * size)
    q = np.moveaxis(q[..., :k], -1, axis)
    scale = np.moveaxis(scale, -1, axis)
    zero = np.moveaxis(zero, -1, axis) if zero is not None else None
    return Quantized(np.ascontiguousarray(q), np.ascontiguousarray(scale), zero, axis)


def _compiled(x: np.ndarray, scheme: Scheme, axis: int | None) -> Quantized:
    """float32 weights through the compiled loop: every granularity as rows of blocks."""
    from bundler.codecs.kernels import announced

    blocks = announced("bundler.containers.onnx.quant_kernels", "ONNX quantization").blocks

    if scheme.granularity == "tensor":
        rows, size = x.reshape(1, -1), x.size
    elif scheme.granularity == "channel":
        axis %= x.ndim
        rows = np.ascontiguousarray(np.moveaxis(x, axis, 0)).reshape(x.shape[axis], -1)
        size = rows.shape[1]
    else:
        axis %= x.ndim
        moved = np.ascontiguousarray(np.moveaxis(x, axis, -1))
        rows, size = moved.reshape(-1, moved.shape[-1]), scheme.block_size
    nb = -(-rows.shape[1] // size)
    codes16 = np.empty(rows.shape, np.int16)
    scales = np.empty((rows.shape[0], nb), np.float32)
    zeros = np.empty((rows.shape[0], nb), np.int16)
    blocks(rows, size, scheme.qmin, scheme.qmax, scheme.signed, codes16, scales, zeros)
    code_type = np.int8 if scheme.signed else np.uint8
    q, zero = codes16.astype(code_type), None if scheme.signed else zeros.astype(np.uint8)
    if scheme.granularity == "tensor":
        return Quantized(q.reshape(x.shape), scales.reshape(()), _z(zero, ()), None)
    if scheme.granularity == "channel":
        moved_shape = (x.shape[axis], *[d for i, d in enumerate(x.shape) if i != axis])
        q = np.moveaxis(q.reshape(moved_shape), 0, axis)
        return Quantized(np.ascontiguousarray(q), scales.reshape(-1), _z(zero, (-1,)), axis)
    lead = moved.shape[:-1]
    q = np.moveaxis(q.reshape(moved.shape), -1, axis)
    scale = np.moveaxis(scales.reshape(*lead, nb), -1, axis)
    zb = np.moveaxis(zero.reshape(*lead, nb), -1, axis) if zero is not None else None
    return Quantized(
        np.ascontiguousarray(q), np.ascontiguousarray(scale),
        np.ascontiguousarray(zb) if zb is not None else None, axis,
    )  # fmt: skip


def nbits_layout(w: np.ndarray, scheme: Scheme) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """MatMulNBits' packed B uint8 [N, blocks, block / 2], scales [N, blocks] (w's dtype)
    and zero points [N, blocks] (unsigned range; 8 for signed codes) of a [K, N] weight,
    blocks along K."""
    k, n = w.shape
    size = scheme.block_size
    blocks = -(-k // size)
    if w.dtype == np.float32 and w.size >= COMPILED_MIN_VALUES:
        from bundler.codecs.kernels import announced

        nbits = announced("bundler.containers.onnx.quant_kernels", "ONNX quantization").nbits

        packed = np.empty((n, blocks, size // 2), np.uint8)
        scales = np.empty((n, blocks), np.float32)
        zeros = np.empty((n, blocks), np.int16)
        nbits(np.ascontiguousarray(w), size, scheme.signed, packed, scales, zeros)
        return packed, scales, zeros.astype(np.uint8) if not scheme.signed else zeros + 8
    qz = quantize(np.ascontiguousarray(w.T), scheme, 1)  # W^T [N, K], blocks along K
    offset = np.uint8(8) if scheme.signed else np.uint8(0)
    zero = np.full((n, blocks), 8, np.uint8) if scheme.signed else qz.zero_point
    padded = np.empty((n, blocks * size), np.uint8)
    padded[:, :k] = (qz.codes.view(np.uint8) + offset) & 0x0F
    padded[:, k:] = zero[:, -1:]
    t = padded.reshape(n, blocks, size)
    return t[..., 0::2] | (t[..., 1::2] << 4), qz.scale, zero


def _z(zero: np.ndarray | None, shape: tuple[int, ...]) -> np.ndarray | None:
    return None if zero is None else zero.reshape(shape)


def expand_blocks(param: np.ndarray, axis: int, block_size: int, length: int) -> np.ndarray:
    """A blocked scale or zero point repeated to one value per element along `axis`."""
    return np.repeat(param, block_size, axis=axis).take(np.arange(length), axis=axis)
