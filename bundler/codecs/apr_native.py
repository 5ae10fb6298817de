"""aprender's own codecs, AprQ4 and AprQ8, laid out over the flattened tensor.

AprQ4 (APR dtype 128, 8 in old files): blocks of 32 values, each an IEEE half scale
`max|x| / 7` (1.0 for an all-zero block) and 16 bytes of 4-bit codes `round(x / scale)`
clamped to [-8, 7] and stored as `q + 8`; value 2i of the block sits in the LOW nibble of
byte i, value 2i+1 in the HIGH nibble. A last partial block has its unused nibbles zero.
Decoding gives `(nibble - 8) * scale`, where a NaN, infinite or subnormal scale counts as 0.

AprQ8 (APR dtype 129, 9 in old files): one float32 scale for the whole tensor
(`max|x| / 127`, 1.0 if all zero) followed by one int8 `round(x / scale)` clamped to
[-127, 127] per value. An empty tensor is stored as zero bytes.

Source: aprender's `AprV2Writer::add_q4_tensor` / `add_q8_tensor` and its `dequantize_q4`.
The scale and the quotient are float32 operations (`max_abs / 7.0` and `v / scale` on f32),
and the quotient uses the float32 scale, not its half-rounded copy; the half is the
round-to-nearest-even conversion of that scale. `round` is Rust's `f32::round`, which rounds
half-way cases AWAY from zero (2.5 -> 3, -2.5 -> -3), unlike numpy's half-to-even.
NaN and infinity are refused, as by every block codec here (aprender would store them as 0).
"""

from __future__ import annotations

import numpy as np

from bundler.codecs.registry import Kernel
from bundler.errors import NonFiniteError, ShapeError

_BLOCK = 32
_BLOCK_BYTES = 18
#: Smallest normal half; aprender decodes a scale below it (a subnormal) as 0.
_F16_MIN_NORMAL = np.float32(2.0**-14)


def round_half_away(v: np.ndarray) -> np.ndarray:
    """Round to the nearest integer, half-way cases away from zero (Rust's `f32::round`)."""
    whole = np.trunc(v)
    frac = v - whole  # exact: a float minus its truncation needs no rounding
    return whole + np.where(np.abs(frac) >= 0.5, np.sign(v), 0).astype(v.dtype)


def _flat_f32(x: np.ndarray, name: str) -> np.ndarray:
    flat = np.ascontiguousarray(x, dtype=np.float32).reshape(-1)
    bad = ~np.isfinite(flat)
    if bad.any():
        i = int(np.argmax(bad))
        index = tuple(int(k) for k in np.unravel_index(i, x.shape)) if x.ndim else ()
        value = float(flat[i])
        raise NonFiniteError(
            f"{name} cannot encode {value} at index {index}: block codecs need finite values",
            index,
            value,
        )
    return flat


def _into(out: np.ndarray | None, result: np.ndarray, what: str) -> np.ndarray:
    if out is None:
        return result
    if out.shape != result.shape or out.dtype != result.dtype or not out.flags.c_contiguous:
        raise ShapeError(
            f"{what} output buffer must be C-contiguous {result.dtype} of shape "
            f"{result.shape}, got {out.dtype} {out.shape}"
        )
    out[...] = result
    return out


def encode_q4(x: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
    """AprQ4 bytes of `x` (flattened in C order)."""
    flat = _flat_f32(np.asarray(x), "apr_q4")
    n = flat.size
    blocks = -(-n // _BLOCK)
    padded = np.zeros(blocks * _BLOCK, np.float32)
    padded[:n] = flat
    padded = padded.reshape(blocks, _BLOCK)
    amax = np.abs(padded).max(axis=1) if blocks else np.zeros(0, np.float32)
    scale = np.where(amax == 0, np.float32(1.0), amax / np.float32(7.0)).astype(np.float32)
    q = np.clip(round_half_away(padded / scale[:, None]), -8, 7).astype(np.int8)
    nibbles = (q + 8).astype(np.uint8).reshape(-1)
    nibbles[n:] = 0  # aprender leaves the unused nibbles of the last block zero
    nibbles = nibbles.reshape(blocks, _BLOCK)
    result = np.empty((blocks, _BLOCK_BYTES), np.uint8)
    result[:, :2] = scale.astype("<f2").view(np.uint8).reshape(blocks, 2)
    result[:, 2:] = nibbles[:, 0::2] | (nibbles[:, 1::2] << 4)
    return _into(out, result.reshape(-1), "apr_q4 encode")


def decode_q4(raw: np.ndarray, shape: tuple[int, ...], out: np.ndarray | None = None) -> np.ndarray:
    """Values of AprQ4 bytes in the logical `shape`, as float32."""
    n = int(np.prod(shape, dtype=np.int64)) if shape else 1
    blocks = -(-n // _BLOCK)
    if raw.size != blocks * _BLOCK_BYTES:
        raise ShapeError(
            f"apr_q4 data for shape {tuple(shape)} is {blocks * _BLOCK_BYTES} bytes, got {raw.size}"
        )
    rows = raw.reshape(blocks, _BLOCK_BYTES)
    scale = rows[:, :2].copy().view("<f2").astype(np.float32).reshape(-1)
    unusable = ~np.isfinite(scale) | (np.abs(scale) < _F16_MIN_NORMAL)
    scale[unusable] = 0.0
    codes = np.empty((blocks, _BLOCK), np.int8)
    codes[:, 0::2] = (rows[:, 2:] & 0x0F).astype(np.int8)
    codes[:, 1::2] = (rows[:, 2:] >> 4).astype(np.int8)
    values = (codes - 8).astype(np.float32) * scale[:, None]
    return _into(out, values.reshape(-1)[:n].reshape(shape), "apr_q4 decode")


def encode_q8(x: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
    """AprQ8 bytes of `x` (flattened in C order): float32 scale, then int8 codes."""
    flat = _flat_f32(np.asarray(x), "apr_q8")
    if flat.size == 0:
        return _into(out, np.zeros(0, np.uint8), "apr_q8 encode")
    amax = np.abs(flat).max()
    scale = np.float32(1.0) if amax == 0 else np.float32(amax / np.float32(127.0))
    q = np.clip(round_half_away(flat / scale), -127, 127).astype(np.int8)
    result = np.empty(4 + flat.size, np.uint8)
    result[:4] = np.array([scale], "<f4").view(np.uint8)
    result[4:] = q.view(np.uint8)
    return _into(out, result, "apr_q8 encode")


def decode_q8(raw: np.ndarray, shape: tuple[int, ...], out: np.ndarray | None = None) -> np.ndarray:
    """Values of AprQ8 bytes in the logical `shape`, as float32."""
    n = int(np.prod(shape, dtype=np.int64)) if shape else 1
    need = 4 + n if n else 0
    if raw.size != need:
        raise ShapeError(f"apr_q8 data for shape {tuple(shape)} is {need} bytes, got {raw.size}")
    if n == 0:
        return _into(out, np.zeros(shape, np.float32), "apr_q8 decode")
    scale = raw[:4].copy().view("<f4")[0]
    values = raw[4:].view(np.int8).astype(np.float32) * scale
    return _into(out, values.reshape(shape), "apr_q8 decode")


KERNELS = {
    "apr_q4": Kernel(encode_q4, decode_q4),
    "apr_q8": Kernel(encode_q8, decode_q8),
}
