"""The four per-vector schemes (QInt8, QInt4, Binary, FP16): their facts, and quantizing and
dequantizing one vector or an (N, D) matrix of them.

The arithmetic is lnmp-quant's, in float32, as formats/vectors.md states it.
"""

from __future__ import annotations

import enum
import functools
from dataclasses import dataclass
from types import SimpleNamespace
from typing import Any

import numpy as np

from bundler.codecs.kernels import Compiled, first_call
from bundler.errors import (
    DataCorrupted,
    DecodingFailed,
    EncodingFailed,
    InvalidDimension,
    InvalidScheme,
)

#: The compiled kernels the schemes call (`vectors.kernels`).
_KERNELS = ("qint8_decode", "qint4_decode", "binary_encode", "binary_decode", "f16_decode")
_KERNELS += ("f16_quantize", "qint8_quantize", "qint4_quantize")


@functools.cache
def compiled_kernels() -> SimpleNamespace:
    """The compiled vector kernels, each run from its native entry when it has one, else
    loaded (and compiled, said on stderr) on first use."""
    module = "bundler.codecs.vectors.kernels"
    return SimpleNamespace(
        **{name: first_call(Compiled(module, name), "vector", threaded=False) for name in _KERNELS}
    )


class Scheme(enum.Enum):
    """A vector quantization scheme; the value is its name, `code` its serialized id."""

    QINT8 = "qint8"
    QINT4 = "qint4"
    BINARY = "binary"
    FP16 = "fp16"

    @property
    def code(self) -> int:
        return _FACTS[self][0]

    @property
    def bits(self) -> int:
        """Bits stored per value."""
        return _FACTS[self][1]

    def data_size(self, dim: int) -> int:
        """Bytes of the packed data of one `dim`-value vector."""
        return (dim * self.bits + 7) // 8

    def compression_ratio(self, dim: int) -> float:
        """float32 bytes over data bytes (lnmp-quant's ratio: no scale or min counted)."""
        return 4.0 * dim / self.data_size(dim)

    @classmethod
    def parse(cls, value: Any) -> Scheme:
        """A scheme from itself, its name (any case, 'fp16passthrough' too) or its code."""
        if isinstance(value, Scheme):
            return value
        if isinstance(value, (int, np.integer)) and not isinstance(value, bool):
            for s in cls:
                if s.code == int(value):
                    return s
        elif isinstance(value, str):
            name = value.strip().lower().replace("_", "")
            name = "fp16" if name == "fp16passthrough" else name
            for s in cls:
                if s.value == name:
                    return s
        valid = ", ".join(s.value for s in cls)
        raise InvalidScheme(f"unknown vector scheme {value!r}; valid schemes: {valid}")


#: code (serialized id, lnmp-quant's enum order), bits per value
_FACTS = {Scheme.QINT8: (0, 8), Scheme.QINT4: (1, 4), Scheme.BINARY: (2, 1), Scheme.FP16: (3, 16)}

#: Schemes from the most to the least compact.
BY_SIZE = (Scheme.BINARY, Scheme.QINT4, Scheme.QINT8, Scheme.FP16)


@dataclass(eq=False)
class QuantizedVectors:
    """N vectors of one scheme and dimension: per-vector scale and min, packed data rows.

    For Binary, `min` holds each vector's mean (the threshold) and `scale` is 1; for FP16
    scale is 1 and min 0, as in lnmp-quant. `zero_point` is always 0.
    """

    scheme: Scheme
    dim: int
    scale: np.ndarray  # (N,) float32
    min: np.ndarray  # (N,) float32
    data: np.ndarray  # (N, data_size) uint8
    zero_point: int = 0

    def __post_init__(self) -> None:
        self.scheme = Scheme.parse(self.scheme)
        self.scale = np.ascontiguousarray(self.scale, dtype=np.float32).reshape(-1)
        self.min = np.ascontiguousarray(self.min, dtype=np.float32).reshape(-1)
        data = np.asarray(self.data)
        if data.dtype != np.uint8:
            data = data.view(np.uint8)
        self.data = np.ascontiguousarray(data).reshape(len(self.scale), -1)
        row = self.scheme.data_size(self.dim)
        if self.dim <= 0:
            raise InvalidDimension(f"vector dimension must be positive, got {self.dim}")
        if self.data.shape[1] != row or len(self.min) != len(self.scale):
            raise DataCorrupted(
                None,
                None,
                f"{self.scheme.value} vectors of {self.dim} values need {row} data bytes each "
                f"and one scale and min each; got rows of {self.data.shape[1]} bytes, "
                f"{len(self.scale)} scales, {len(self.min)} mins",
            )

    @classmethod
    def built(
        cls, scheme: Scheme, dim: int, scale: np.ndarray, low: np.ndarray, data: np.ndarray
    ) -> QuantizedVectors:
        """Vectors from arrays a quantizer has just built with the right types and shapes
        (the constructor's checks skipped)."""
        q = object.__new__(cls)
        q.scheme, q.dim, q.scale, q.min, q.data, q.zero_point = scheme, dim, scale, low, data, 0
        return q

    def __len__(self) -> int:
        return len(self.scale)

    def __getitem__(self, index: int) -> QuantizedVector:
        i = range(len(self))[index]
        return QuantizedVector(
            self.dim,
            self.scheme,
            float(self.scale[i]),
            self.zero_point,
            float(self.min[i]),
            self.data[i].copy(),
        )

    def data_size(self) -> int:
        """Bytes of the packed data of all vectors (no scale or min)."""
        return int(self.data.size)

    def stored_size(self) -> int:
        """Bytes with each vector's scale and min (4 bytes each) counted."""
        return self.data_size() + 8 * len(self)

    def compression_ratio(self) -> float:
        """float32 bytes over data bytes."""
        return self.scheme.compression_ratio(self.dim)

    def take(self, rows: Any) -> QuantizedVectors:
        """The vectors at `rows` (indices or a boolean mask)."""
        return QuantizedVectors(
            self.scheme, self.dim, self.scale[rows], self.min[rows], self.data[rows]
        )

    def dequantize(self, out: np.ndarray | None = None) -> np.ndarray:
        """The (N, dim) float32 reconstruction."""
        return dequantize(self, out=out)


@dataclass(eq=False)
class QuantizedVector:
    """One quantized vector, with lnmp-quant's fields."""

    dim: int
    scheme: Scheme
    scale: float
    zero_point: int
    min_val: float
    data: np.ndarray

    def __post_init__(self) -> None:
        self.scheme = Scheme.parse(self.scheme)
        self.data = (
            np.frombuffer(bytes(self.data), np.uint8)
            if not isinstance(self.data, np.ndarray)
            else self.data.view(np.uint8).reshape(-1)
        )

    def as_batch(self) -> QuantizedVectors:
        return QuantizedVectors(
            self.scheme, self.dim, [self.scale], [self.min_val], self.data[None, :]
        )

    def data_size(self) -> int:
        return int(self.data.size)

    def compression_ratio(self) -> float:
        return 4.0 * self.dim / self.data.size

    def dequantize(self) -> np.ndarray:
        """The (dim,) float32 reconstruction."""
        return dequantize(self.as_batch())[0]

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, QuantizedVector):
            return NotImplemented
        same = np.float32(self.scale).tobytes() == np.float32(other.scale).tobytes()
        same &= np.float32(self.min_val).tobytes() == np.float32(other.min_val).tobytes()
        return (
            same
            and (self.dim, self.scheme, self.zero_point)
            == (other.dim, other.scheme, other.zero_point)
            and self.data.tobytes() == other.data.tobytes()
        )

    __hash__ = None  # type: ignore[assignment]


def as_matrix(x: Any, dim: int | None = None) -> np.ndarray:
    """`x` as a C-contiguous (N, D) float32 matrix (a 1-D vector is one row).

    Raises InvalidDimension for an empty vector or a D other than `dim`.
    """
    a = np.asarray(x)
    if a.dtype.kind not in "fiub":
        raise EncodingFailed(f"vectors must be numbers, got {a.dtype}")
    if a.ndim == 1:
        a = a[None, :]
    if a.ndim != 2:
        raise InvalidDimension(f"expected one vector or an (N, D) matrix, got shape {a.shape}")
    if a.shape[1] == 0:
        raise InvalidDimension("cannot quantize a vector of zero length")
    if dim is not None and a.shape[1] != dim:
        raise InvalidDimension(f"vector of {a.shape[1]} values in a collection of dimension {dim}")
    return np.ascontiguousarray(a, dtype=np.float32)


def check_finite(x: np.ndarray, first_row: int = 0) -> None:
    """EncodingFailed naming the first non-finite value (row, column) of a matrix whose
    first row is row `first_row` of the caller's."""
    if not np.isfinite(x).all():
        row, col = (int(i) for i in np.argwhere(~np.isfinite(x))[0])
        value = x[row, col]
        row += first_row
        err = EncodingFailed(f"vector {row}: value {col} is {value}; vectors must be finite")
        err.index = row
        raise err


def range_overflows(x: np.ndarray) -> np.ndarray:
    """Rows whose max - min overflows float32 (lnmp-quant would emit NaN reconstructions)."""
    with np.errstate(over="ignore"):
        return ~np.isfinite(x.max(axis=1) - x.min(axis=1))


def quantize(x: Any, scheme: Scheme | str) -> QuantizedVector | QuantizedVectors:
    """Quantize one vector (-> QuantizedVector) or an (N, D) matrix (-> QuantizedVectors).

    Raises EncodingFailed for a NaN or infinity, or for a vector whose range overflows
    float32 with QInt8 or QInt4; InvalidDimension for an empty vector.
    """
    scheme = Scheme.parse(scheme)
    one = np.ndim(x) == 1
    q = quantize_matrix(as_matrix(x), scheme)
    return q[0] if one else q


def _raise_non_finite(x: np.ndarray, suspects: np.ndarray) -> None:
    """EncodingFailed for the first of the `suspects` rows holding a NaN or infinity."""
    for i in suspects.tolist():
        check_finite(x[i : i + 1], first_row=i)


def quantize_matrix(x: np.ndarray, scheme: Scheme) -> QuantizedVectors:
    """Quantize a C-contiguous float32 (N, D) matrix.

    Raises EncodingFailed for a NaN or infinity, or (QInt8, QInt4) a range float32
    cannot hold, naming the first such vector.
    """
    n, dim = x.shape
    data = np.empty((n, scheme.data_size(dim)), np.uint8)
    scale = np.empty(n, np.float32)
    low = np.empty(n, np.float32)
    kernels = compiled_kernels()
    if scheme is Scheme.BINARY:
        # a NaN or infinity makes the mean non-finite (so may a sum that overflows)
        if kernels.binary_encode(x, data, low):
            _raise_non_finite(x, np.flatnonzero(~np.isfinite(low)))
        scale.fill(1)
        return QuantizedVectors.built(scheme, dim, scale, low, data)
    flags = np.empty(n, np.uint8)
    if scheme is Scheme.FP16:
        # a NaN or infinity gives an all-ones exponent (so does a finite value above 65504)
        if kernels.f16_quantize(x, data.view("<u2"), flags):
            _raise_non_finite(x, np.flatnonzero(flags))
        scale.fill(1)
        low.fill(0)
        return QuantizedVectors.built(scheme, dim, scale, low, data)
    quantize = kernels.qint8_quantize if scheme is Scheme.QINT8 else kernels.qint4_quantize
    high = np.empty(n, np.float32)
    if quantize(x, low, high, flags, data, scale):
        _raise_non_finite(x, np.flatnonzero(flags == 1))
        first = int(np.flatnonzero(flags)[0])
        err = EncodingFailed(
            f"vector {first}: max - min overflows float32; {scheme.value} "
            "cannot represent it (use fp16 or scale the vector)"
        )
        err.index = first
        raise err
    return QuantizedVectors.built(scheme, dim, scale, low, data)


_FLOAT32 = np.dtype(np.float32)

#: Outputs from this size start on a cache line, so that whole-line vector stores never
#: straddle two lines (which halves their speed); smaller ones skip the cost of aligning.
_ALIGN_FROM = 1 << 16


def _empty_rows(n: int, dim: int) -> np.ndarray:
    """An uninitialised C-contiguous (n, dim) float32 matrix, 64-byte aligned when large."""
    size = 4 * n * dim
    if size < _ALIGN_FROM:
        return np.empty((n, dim), np.float32)
    raw = np.empty(size + 64, np.uint8)
    start = -raw.ctypes.data % 64
    return raw[start : start + size].view(np.float32).reshape(n, dim)


def dequantize(q: QuantizedVectors | QuantizedVector, out: np.ndarray | None = None) -> np.ndarray:
    """float32 values from quantized vectors: (dim,) for one, (N, dim) for a collection."""
    if isinstance(q, QuantizedVector):
        return dequantize(q.as_batch())[0]
    n, dim = q.data.shape[0], q.dim
    if out is None:
        out = _empty_rows(n, dim)
    elif (
        out.shape != (n, dim)
        or (out.dtype is not _FLOAT32 and out.dtype != _FLOAT32)
        or not out.flags.c_contiguous
    ):
        raise InvalidDimension(f"output must be a C-contiguous float32 {(n, dim)} array")
    kernels = compiled_kernels()
    if q.scheme is Scheme.BINARY:
        kernels.binary_decode(q.data, out)
    elif q.scheme is Scheme.FP16:
        kernels.f16_decode(q.data.view("<u2"), out)
    else:
        decode = kernels.qint8_decode if q.scheme is Scheme.QINT8 else kernels.qint4_decode
        if not decode(q.data, q.scale, q.min, out):
            raise DecodingFailed("a scale or min is not finite: the codes cannot be dequantized")
    return out


def cosine(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Per-row cosine similarity of two (N, D) matrices, in float64.

    Two zero rows count as identical (1.0); one zero row against a non-zero one as 0.
    """
    a = np.atleast_2d(np.asarray(a, np.float64))
    b = np.atleast_2d(np.asarray(b, np.float64))
    dot = np.einsum("ij,ij->i", a, b)
    na = np.sqrt(np.einsum("ij,ij->i", a, a))
    nb = np.sqrt(np.einsum("ij,ij->i", b, b))
    with np.errstate(invalid="ignore", divide="ignore"):
        c = dot / (na * nb)
    both_zero = (na == 0) & (nb == 0)
    c[both_zero] = 1.0
    c[~both_zero & ((na == 0) | (nb == 0))] = 0.0
    return np.clip(c, -1.0, 1.0)


def vector_cosine(x: Any, q: QuantizedVectors | QuantizedVector) -> np.ndarray | float:
    """Cosine between original vectors and their reconstructions (a float for one vector)."""
    c = cosine(as_matrix(x), dequantize(q) if isinstance(q, QuantizedVectors) else q.dequantize())
    return float(c[0]) if isinstance(q, QuantizedVector) else c


__all__ = [
    "BY_SIZE",
    "QuantizedVector",
    "QuantizedVectors",
    "Scheme",
    "as_matrix",
    "cosine",
    "dequantize",
    "quantize",
    "vector_cosine",
]
