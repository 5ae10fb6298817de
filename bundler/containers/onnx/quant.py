"""ONNX weight quantization: the affine codecs (bundler/codecs/affine) laid out as
DequantizeLinear and MatMulNBits read them.

The arithmetic is the affine family's with ONNX's choices: symmetric (signed) codes use the
`extreme` scale rule (the value of largest magnitude is code qmin, as ONNX Runtime's own
4-bit quantizer does: all 2^B codes in use, the scale negative when that value is
positive), asymmetric codes have a zero point; scales are stored in the weight's float type
(float32 or float16); the codes' quotient x / scale is taken in float32 as QuantizeLinear
takes it (`div32`); MinMax ranges. Blocks are slices of `block_size` consecutive values
along an axis; a last, shorter block is padded with its own last value (its range stays
its own) and the padding cut off again.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass

import numpy as np

from bundler.codecs.affine import AffineCodec
from bundler.codecs.affine import Scheme as AffineScheme
from bundler.codecs.affine.codec import encode_blocks_down
from bundler.codecs.affine.packing import IntegerCodes
from bundler.codecs.kernels import kernel_threads

#: Weights of fewer values than this are quantized on one thread: for them a second
#: thread costs more (starting, waiting at the end of the loop) than it saves.
ONE_THREAD_BELOW = 1 << 17


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

    def codec(self, dtype: np.dtype, granularity: str = "tensor", axis: int = 0) -> AffineCodec:
        """The affine codec of these codes for a weight of `dtype` (float32 or float16), per
        tensor or per channel along `axis` (blocks are channels of rows of a block)."""
        return AffineCodec(
            AffineScheme(
                bits=self.bits, symmetric=self.signed, granularity=granularity, axis=axis,
                scale_dtype="f16" if np.dtype(dtype) == np.float16 else "f32",
                scale_rule="extreme" if self.signed else "half_range", division="f32",
            )
        )  # fmt: skip


@dataclass
class Quantized:
    """Codes (int8/uint8 numpy, one per value), scales in the weight's dtype shaped for
    DequantizeLinear (scalar, 1-D along the axis, or the blocked shape), zero points
    (None when symmetric) and the axis."""

    codes: np.ndarray
    scale: np.ndarray
    zero_point: np.ndarray | None
    axis: int | None


def threads_for(x: np.ndarray) -> contextlib.AbstractContextManager[None]:
    """The kernels' thread setting for quantizing `x`: one thread for a small weight."""
    return kernel_threads(1) if x.size < ONE_THREAD_BELOW else contextlib.nullcontext()


def quantize(x: np.ndarray, scheme: Scheme, axis: int | None = None) -> Quantized:
    """Quantize `x` per tensor, per channel along `axis`, or in blocks along `axis`."""
    if scheme.granularity == "tensor":
        enc = scheme.codec(x.dtype).encode(x)
        return Quantized(enc.codes, enc.scale.reshape(()), _z(enc.zero_point, ()), None)
    axis %= x.ndim
    if scheme.granularity == "channel":
        enc = scheme.codec(x.dtype, "channel", axis).encode(x)
        return Quantized(enc.codes, enc.scale.reshape(-1), _z(enc.zero_point, (-1,)), axis)
    if x.ndim == 2 and axis == 0:  # a MatMul weight's reduction axis: read in place
        codes, scale, zero = encode_blocks_down(scheme.codec(x.dtype), x, scheme.block_size)
        return Quantized(codes, scale, zero, axis)
    moved = np.moveaxis(x, axis, -1)  # blocks contiguous in memory
    codes, scale, zero = _blocks(moved, scheme)
    k = moved.shape[-1]
    q = np.moveaxis(codes.reshape(*moved.shape[:-1], -1)[..., :k], -1, axis)
    nb = scale.shape[-1]
    scale = np.moveaxis(scale.reshape(*moved.shape[:-1], nb), -1, axis)
    if zero is not None:
        zero = np.ascontiguousarray(np.moveaxis(zero.reshape(*moved.shape[:-1], nb), -1, axis))
    return Quantized(np.ascontiguousarray(q), np.ascontiguousarray(scale), zero, axis)


def _blocks(moved: np.ndarray, scheme: Scheme) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """Codes [rows, blocks * size] (padding included), scales and zero points [rows, blocks]
    of the blocks along the last axis of `moved`."""
    size = scheme.block_size
    k = moved.shape[-1]
    rows = moved.reshape(-1, k)
    blocks = -(-k // size)
    padded = np.empty((rows.shape[0], blocks * size), moved.dtype)
    padded[:, :k] = rows
    padded[:, k:] = rows[:, -1:]  # the last value: the block's range stays its own
    enc = scheme.codec(moved.dtype, "channel", 0).encode(padded.reshape(-1, size))
    zero = None if enc.zero_point is None else enc.zero_point.reshape(-1, blocks)
    return enc.codes.reshape(rows.shape[0], -1), enc.scale.reshape(-1, blocks), zero


def nbits_layout(w: np.ndarray, scheme: Scheme) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """MatMulNBits' packed B uint8 [N, blocks, block / 2] (codes offset to the unsigned
    range, two a byte, low nibble first; padding codes are the zero point), scales
    [N, blocks] (w's dtype) and zero points [N, blocks] (unsigned range; 8 for signed
    codes) of a [K, N] weight, blocks along K."""
    size = scheme.block_size
    packed, scale, zero = encode_blocks_down(scheme.codec(w.dtype), w, size, nibbles=True)
    if scheme.signed:
        zero = np.full(scale.shape, 8, np.uint8)
    return packed, np.ascontiguousarray(scale.T), np.ascontiguousarray(zero.T)


def _z(zero: np.ndarray | None, shape: tuple[int, ...]) -> np.ndarray | None:
    return None if zero is None else zero.reshape(shape)


def expand_blocks(param: np.ndarray, axis: int, block_size: int, length: int) -> np.ndarray:
    """A blocked scale or zero point repeated to one value per element along `axis`."""
    return np.repeat(param, block_size, axis=axis).take(np.arange(length), axis=axis)
