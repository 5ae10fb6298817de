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

import math

import numpy as np

from bundler.codecs.facts import BY_NAME
from bundler.codecs.kernels import Kernel
from bundler.errors import NonFiniteError, ShapeError

_BLOCK = BY_NAME["apr_q4"].block_size
_BLOCK_BYTES = BY_NAME["apr_q4"].type_size
#: Blocks encoded or decoded at a time, to bound the temporaries.
_CHUNK_BLOCKS = 1 << 15
#: AprQ8 values encoded at a time, for the same reason.
_CHUNK_VALUES = _CHUNK_BLOCKS * _BLOCK
#: Smallest normal half; aprender decodes a scale below it (a subnormal) as 0.
_F16_MIN_NORMAL = np.float32(2.0**-14)


def round_half_away(v: np.ndarray) -> np.ndarray:
    """Round to the nearest integer, half-way cases away from zero (Rust's `f32::round`)."""
    # |v| + 0.5 is exact in float64 for |v| < 2^52; a larger float32 is a multiple of 2^29,
    # to which |v| + 0.5 rounds back, so floor gives the right integer for every float32.
    w = v.astype(np.float64)
    np.abs(w, out=w)
    w += 0.5
    np.floor(w, out=w)
    return np.copysign(w.astype(v.dtype), v)


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


def _output(out: np.ndarray | None, shape: tuple[int, ...], dtype: type, what: str):
    if out is None:
        return np.empty(shape, dtype)
    if out.shape != tuple(shape) or out.dtype != dtype or not out.flags.c_contiguous:
        raise ShapeError(
            f"{what} output buffer must be C-contiguous {np.dtype(dtype)} of shape "
            f"{tuple(shape)}, got {out.dtype} {out.shape}"
        )
    return out


def _q4_blocks(values: np.ndarray, dst: np.ndarray) -> None:
    """Encode whole blocks of 32 float32 values (rows of `values`) into 18-byte rows."""
    amax = np.abs(values).max(axis=1)
    scale = np.where(amax == 0, np.float32(1.0), amax / np.float32(7.0)).astype(np.float32)
    q = np.clip(round_half_away(values / scale[:, None]), -8, 7).astype(np.int8)
    nibbles = (q + 8).view(np.uint8)
    dst[:, :2] = scale.astype("<f2").view(np.uint8).reshape(-1, 2)
    dst[:, 2:] = nibbles[:, 0::2] | (nibbles[:, 1::2] << 4)


def encode_q4(x: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
    """AprQ4 bytes of `x` (flattened in C order)."""
    flat = _flat_f32(np.asarray(x), "apr_q4")
    n = flat.size
    full, rest = divmod(n, _BLOCK)
    dst = _output(out, ((full + (rest > 0)) * _BLOCK_BYTES,), np.uint8, "apr_q4 encode")
    rows = dst.reshape(-1, _BLOCK_BYTES)
    blocks = flat[: full * _BLOCK].reshape(full, _BLOCK)
    for start in range(0, full, _CHUNK_BLOCKS):
        stop = min(start + _CHUNK_BLOCKS, full)
        _q4_blocks(blocks[start:stop], rows[start:stop])
    if rest:
        last = np.zeros((1, _BLOCK), np.float32)
        last[0, :rest] = flat[full * _BLOCK :]
        _q4_blocks(last, rows[full:])
        # aprender leaves the nibbles past the tensor's end zero (not the code of 0)
        tail = rows[full, 2:]
        tail[-(-rest // 2) :] = 0
        if rest % 2:
            tail[rest // 2] &= 0x0F
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
    rows = raw.reshape(blocks, _BLOCK_BYTES)
    full = n // _BLOCK
    for start in range(0, blocks, _CHUNK_BLOCKS):
        chunk = rows[start : start + _CHUNK_BLOCKS]
        values = _q4_values(chunk)
        stop = min(start + len(chunk), full)
        if stop > start:
            dst[start * _BLOCK : stop * _BLOCK] = values[: stop - start].reshape(-1)
        if start + len(chunk) > full:  # the partial last block
            dst[full * _BLOCK :] = values[-1, : n - full * _BLOCK]
    return result


def _q4_values(rows: np.ndarray) -> np.ndarray:
    scale = rows[:, :2].copy().view("<f2").astype(np.float32).reshape(-1)
    unusable = ~np.isfinite(scale) | (np.abs(scale) < _F16_MIN_NORMAL)
    scale[unusable] = 0.0
    codes = np.empty((len(rows), _BLOCK), np.int8)
    codes[:, 0::2] = (rows[:, 2:] & 0x0F).view(np.int8)
    codes[:, 1::2] = (rows[:, 2:] >> 4).view(np.int8)
    codes -= 8
    return codes.astype(np.float32) * scale[:, None]


def encode_q8(x: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
    """AprQ8 bytes of `x` (flattened in C order): float32 scale, then int8 codes."""
    flat = _flat_f32(np.asarray(x), "apr_q8")
    dst = _output(out, (4 + flat.size if flat.size else 0,), np.uint8, "apr_q8 encode")
    if flat.size == 0:
        return dst
    encoder = Q8Encoder()
    encoder.add(flat, checked=True)
    dst[:4] = encoder.header()
    encoder.encode(flat, dst[4:])
    return dst


class Q8Encoder:
    """AprQ8 of a tensor given in chunks, twice: `add` every chunk (the scale needs every
    value), then `header()` and, chunk by chunk in the same order, `encode`."""

    def __init__(self) -> None:
        self.amax = np.float32(0.0)

    def add(self, values: np.ndarray, checked: bool = False) -> None:
        """Take a chunk's values into the scale (refusing NaN and infinity unless `checked`)."""
        flat = values.reshape(-1) if checked else _flat_f32(values, "apr_q8")
        for i in range(0, flat.size, _CHUNK_VALUES):
            self.amax = max(self.amax, np.abs(flat[i : i + _CHUNK_VALUES]).max())

    def scale(self) -> np.float32:
        return np.float32(1.0) if self.amax == 0 else np.float32(self.amax / np.float32(127.0))

    def header(self) -> np.ndarray:
        """The 4 bytes of the float32 scale."""
        return np.array([self.scale()], "<f4").view(np.uint8)

    def encode(self, values: np.ndarray, out: np.ndarray) -> np.ndarray:
        """The int8 codes of a chunk, into `out` (uint8, one byte per value)."""
        flat = np.ascontiguousarray(values, dtype=np.float32).reshape(-1)
        codes, scale = out.reshape(-1).view(np.int8), self.scale()
        for i in range(0, flat.size, _CHUNK_VALUES):
            q = np.clip(round_half_away(flat[i : i + _CHUNK_VALUES] / scale), -127, 127)
            codes[i : i + _CHUNK_VALUES] = q.astype(np.int8)
        return out


def q8_body_decoder(header: np.ndarray):
    """Decoder of AprQ8 code chunks, `(body, shape, out)`, given the tensor's 4 header bytes."""
    scale = np.ascontiguousarray(header, np.uint8).view("<f4")[0]

    def decode(body: np.ndarray, shape: tuple[int, ...], out: np.ndarray) -> np.ndarray:
        return np.multiply(body.view(np.int8).reshape(shape), scale, out=out)

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
