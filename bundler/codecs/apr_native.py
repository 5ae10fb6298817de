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
A block whose max|x| / 7 underflows to a zero scale gets Rust's casts: x / 0 is an
infinity, clamped to the extreme code, and 0 / 0 is NaN, which `as i8` makes 0.
"""

from __future__ import annotations

import math

import numpy as np

from bundler.codecs.facts import BY_NAME
from bundler.codecs.halftable import HALF_TO_F32
from bundler.codecs.kernels import Compiled, Kernel, first_call, split_run
from bundler.errors import NonFiniteError, ShapeError

_BLOCK = BY_NAME["apr_q4"].block_size
_BLOCK_BYTES = BY_NAME["apr_q4"].type_size
_MODULE = "bundler.codecs.apr_kernels"
_ENCODE_Q4, _DECODE_Q4 = Compiled(_MODULE, "encode_q4"), Compiled(_MODULE, "decode_q4")
_ENCODE_Q8, _DECODE_Q8 = Compiled(_MODULE, "encode_q8"), Compiled(_MODULE, "decode_q8")
#: AprQ8 values a thread is given at least (each is a few instructions).
_MIN_VALUES = 1 << 16


def _q8_codes(flat: np.ndarray, codes: np.ndarray, scale: np.float32) -> None:
    split_run(_ENCODE_Q8, flat.size, flat, codes, scale, min_split=_MIN_VALUES)


def _q8_values(codes: np.ndarray, out: np.ndarray, scale: np.float32) -> None:
    split_run(_DECODE_Q8, codes.size, codes, out, scale, min_split=_MIN_VALUES)


# AprQ8 also streams through its header encoder and body decoder, outside the Kernel pair,
# so their first calls are announced here: around the calls that split the work, never
# around the compiled loops themselves, which split_run's workers call (a worker's first
# call would wait for the lock a first call on this thread holds while it waits for them)
_q8_codes = first_call(_q8_codes, "apr_q8 encoder")
_q8_values = first_call(_q8_values, "apr_q8 decoder")


def _refuse_non_finite(x: np.ndarray, name: str) -> None:
    """A NonFiniteError naming the first NaN or infinity of `x`, if it holds one."""
    flat = x.reshape(-1)
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


def _output(out: np.ndarray | None, shape: tuple[int, ...], dtype: type, what: str):
    if out is None:
        return np.empty(shape, dtype)
    if out.shape != tuple(shape) or out.dtype != dtype or not out.flags.c_contiguous:
        raise ShapeError(
            f"{what} output buffer must be C-contiguous {np.dtype(dtype)} of shape "
            f"{tuple(shape)}, got {out.dtype} {out.shape}"
        )
    return out


def encode_q4(x: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
    """AprQ4 bytes of `x` (flattened in C order)."""
    flat = np.ascontiguousarray(x, dtype=np.float32).reshape(-1)
    full, rest = divmod(flat.size, _BLOCK)
    dst = _output(out, ((full + (rest > 0)) * _BLOCK_BYTES,), np.uint8, "apr_q4 encode")
    bad = split_run(_ENCODE_Q4, full, flat, dst, _BLOCK, _BLOCK_BYTES)
    if rest:
        last = np.zeros(_BLOCK, np.float32)
        last[:rest] = flat[full * _BLOCK :]
        tail = dst[full * _BLOCK_BYTES :]
        bad += _ENCODE_Q4(last, tail, _BLOCK, _BLOCK_BYTES, 0, 1)
        # aprender leaves the nibbles past the tensor's end zero (not the code of 0)
        codes = tail[2:]
        codes[-(-rest // 2) :] = 0
        if rest % 2:
            codes[rest // 2] &= 0x0F
    if bad:
        _refuse_non_finite(np.asarray(x, dtype=np.float32), "apr_q4")
    return dst


def decode_q4(raw: np.ndarray, shape: tuple[int, ...], out: np.ndarray | None = None) -> np.ndarray:
    """Values of AprQ4 bytes in the logical `shape`, as float32."""
    n = math.prod(shape)
    blocks = -(-n // _BLOCK)
    if raw.size != blocks * _BLOCK_BYTES:
        raise ShapeError(
            f"apr_q4 data for shape {tuple(shape)} is {blocks * _BLOCK_BYTES} bytes, got {raw.size}"
        )
    result = _output(out, shape, np.float32, "apr_q4 decode")
    dst = result.reshape(-1)
    full = n // _BLOCK
    split_run(_DECODE_Q4, full, raw, dst, HALF_TO_F32, _BLOCK, _BLOCK_BYTES)
    if full < blocks:  # the partial last block
        last = np.empty(_BLOCK, np.float32)
        _DECODE_Q4(raw[full * _BLOCK_BYTES :], last, HALF_TO_F32, _BLOCK, _BLOCK_BYTES, 0, 1)
        dst[full * _BLOCK :] = last[: n - full * _BLOCK]
    return result


def encode_q8(x: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
    """AprQ8 bytes of `x` (flattened in C order): float32 scale, then int8 codes."""
    x = np.asarray(x, dtype=np.float32)
    flat = np.ascontiguousarray(x).reshape(-1)
    dst = _output(out, (4 + flat.size if flat.size else 0,), np.uint8, "apr_q8 encode")
    if flat.size == 0:
        return dst
    encoder = Q8Encoder()
    encoder.add(x)
    dst[:4] = encoder.header()
    encoder.encode(flat, dst[4:])
    return dst


class Q8Encoder:
    """AprQ8 of a tensor given in chunks, twice: `add` every chunk (the scale needs every
    value), then `header()` and, chunk by chunk in the same order, `encode`."""

    def __init__(self) -> None:
        self.amax = np.float32(0.0)

    def add(self, values: np.ndarray) -> None:
        """Take a chunk's values into the scale, refusing NaN and infinity."""
        if values.size == 0:
            return
        # the largest magnitude without a temporary array; a NaN or infinity makes it one
        top = max(np.float32(values.max()), -np.float32(values.min()))
        if not np.isfinite(top):
            _refuse_non_finite(np.asarray(values), "apr_q8")
        self.amax = max(self.amax, top)

    def scale(self) -> np.float32:
        return np.float32(1.0) if self.amax == 0 else np.float32(self.amax / np.float32(127.0))

    def header(self) -> np.ndarray:
        """The 4 bytes of the float32 scale."""
        return np.array([self.scale()], "<f4").view(np.uint8)

    def encode(self, values: np.ndarray, out: np.ndarray) -> np.ndarray:
        """The int8 codes of a chunk, into `out` (uint8, one byte per value)."""
        flat = np.ascontiguousarray(values, dtype=np.float32).reshape(-1)
        codes = out.reshape(-1).view(np.int8)
        _q8_codes(flat, codes, self.scale())
        return out


def q8_body_decoder(header: np.ndarray):
    """Decoder of AprQ8 code chunks, `(body, shape, out)`, given the tensor's 4 header bytes."""
    scale = np.ascontiguousarray(header, np.uint8).view("<f4")[0]

    def decode(body: np.ndarray, shape: tuple[int, ...], out: np.ndarray) -> np.ndarray:
        codes = np.ascontiguousarray(body).reshape(-1).view(np.int8)
        _q8_values(codes, out.reshape(-1), scale)
        return out

    return decode


def decode_q8(raw: np.ndarray, shape: tuple[int, ...], out: np.ndarray | None = None) -> np.ndarray:
    """Values of AprQ8 bytes in the logical `shape`, as float32."""
    n = math.prod(shape)
    need = 4 + n if n else 0
    if raw.size != need:
        raise ShapeError(f"apr_q8 data for shape {tuple(shape)} is {need} bytes, got {raw.size}")
    dst = _output(out, shape, np.float32, "apr_q8 decode")
    if n:
        q8_body_decoder(raw[:4])(raw[4:], shape, dst)
    return dst


KERNELS = {
    "apr_q4": Kernel(encode_q4, decode_q4),
    "apr_q8": Kernel(
        encode_q8, decode_q8, header_encoder=Q8Encoder, header_decoder=q8_body_decoder
    ),
}
