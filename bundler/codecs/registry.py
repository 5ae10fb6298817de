"""The codec registry: lookup by name, GGML id, APR code or SafeTensors dtype, and the
`Codec` object whose `encode`/`decode` wrap the kernels of each family.

Kernel modules are imported on first use, so looking codecs up (help, inspect, validate)
never imports the compiler.
"""

from __future__ import annotations

import functools
from collections.abc import Iterator
from typing import Any

import numpy as np

from bundler.codecs.facts import APR_LEGACY_ALIASES, TABLE, CodecFacts
from bundler.codecs.facts import BY_NAME as BY_NAME_FACTS
from bundler.codecs.kernels import Kernel, import_kernels
from bundler.errors import NonFiniteError, ShapeError, UnknownCodecError, UsageError

#: Rows converted at a time when the input is not already contiguous float32.
_CHUNK_VALUES = 1 << 20


class Codec:
    """One codec: its facts plus encode/decode along the last axis."""

    __slots__ = ("_kernel", "facts")

    def __init__(self, facts: CodecFacts):
        self.facts = facts
        self._kernel: Kernel | None = None

    # identity: the codec's configuration is its name
    @property
    def name(self) -> str:
        return self.facts.name

    def config(self) -> dict[str, str]:
        """Plain-JSON identity of the codec."""
        return {"id": self.name}

    def __repr__(self) -> str:
        return f"Codec({self.name!r})"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Codec) and other.name == self.name

    def __hash__(self) -> int:
        return hash(self.name)

    def kernel(self) -> Kernel:
        """The compiled kernels, imported on first use."""
        if self._kernel is None:
            if self.facts.kernels is None:
                raise UsageError(f"codec {self.name!r} can be stored and copied but not encoded")
            self._kernel = import_kernels(self.facts.kernels)[self.name]
        return self._kernel

    def encoded_shape(self, shape: tuple[int, ...]) -> tuple[int, ...]:
        """Shape of the uint8 array `encode` returns for an input of `shape`."""
        if self.facts.flat:
            return (self.facts.nbytes(shape),)
        if not shape:
            if self.facts.block_size != 1:
                raise ShapeError(f"{self.name} needs at least one axis")
            return (self.facts.type_size,)
        n = shape[-1]
        if n % self.facts.block_size:
            raise ShapeError(
                f"{self.name} needs the last axis to be a multiple of "
                f"{self.facts.block_size}, got shape {tuple(shape)}"
            )
        return (*shape[:-1], self.facts.row_bytes(n))

    def encode(self, x: Any, out: np.ndarray | None = None, importance: Any = None) -> np.ndarray:
        """Encode `x` along its last axis into GGML bytes (uint8, last axis = row bytes).

        Input of another dtype or layout is converted to float32 a chunk of rows at a time.
        Block codecs refuse NaN and infinity with `NonFiniteError` naming the position.

        `importance`: None for ggml's reference quantizer (what llama-quantize writes
        without an importance matrix), or one non-negative weight per column (an
        importance-matrix row, length x.shape[-1]) applied to every row, for ggml's
        weighted quantizer (`facts.takes_importance`). Codecs whose ggml quantizer ignores
        the weights (element types, Q8_0) ignore them; the others refuse them.
        """
        x = np.asarray(x)
        weights = self._importance(importance, x.shape)
        kernel = self.kernel()
        if self.facts.flat:
            return kernel.encode(x, out)
        dst = _output(out, self.encoded_shape(x.shape), np.dtype(np.uint8), "encode")
        if x.size == 0:
            return dst
        own = self.facts.numpy_dtype
        if own is not None and x.dtype == np.dtype(own).newbyteorder("="):
            dst.view(own).reshape(x.shape)[...] = x  # already this dtype: bytes kept exactly
            return dst
        n = x.shape[-1] if x.ndim else 1
        dst_rows = dst.reshape(-1, dst.shape[-1])
        want = np.dtype(np.float32) if kernel.float_input else None
        for start, chunk in _row_chunks(x.reshape(1) if x.ndim == 0 else x, n):
            src = np.ascontiguousarray(chunk, dtype=want)
            rows = dst_rows[start : start + len(src)]
            bad = kernel.encode(src, rows, *(() if weights is None else (weights,)))
            if bad < 0:
                _raise_unencodable(self.name, x.shape, src, start, -bad - 1)
            if bad:
                _raise_nonfinite(self.name, x.shape, src, start)
        return dst

    def _importance(self, importance: Any, shape: tuple[int, ...]) -> np.ndarray | None:
        """The weights to pass to the kernel (contiguous float32), None when there are none
        or the codec ignores them; a typed error for weights it refuses or that are wrong."""
        if importance is None:
            if self.facts.requires_importance:
                raise UsageError(
                    f"{self.name} needs importance weights (an importance matrix, "
                    f"llama-quantize's --imatrix): ggml has no {self.name} quantizer without them"
                )
            return None
        if not self.facts.accepts_importance:
            raise UsageError(
                f"{self.name} does not take importance weights (ggml's quantizer for it has "
                f"no weighted search); codecs that do: {', '.join(_importance_codecs())}"
            )
        try:
            weights = np.asarray(importance)
        except (TypeError, ValueError) as exc:
            raise UsageError(
                f"importance weights for {self.name} are not an array: {exc}"
            ) from None
        if weights.ndim != 1:
            raise ShapeError(
                f"importance weights must be 1-D (one per column), got shape {weights.shape}"
            )
        n = shape[-1] if shape else 1
        if weights.shape[0] != n:
            raise ShapeError(
                f"importance weights have {weights.shape[0]} values but the rows of shape "
                f"{tuple(shape)} have {n} columns"
            )
        if weights.dtype.kind not in "fiub":
            raise UsageError(f"importance weights must be numbers, got dtype {weights.dtype}")
        weights = np.array(weights, dtype=np.float32)  # a writable copy: one kernel type
        bad = np.flatnonzero(~(np.isfinite(weights) & (weights >= 0)))
        if bad.size:
            raise UsageError(
                f"importance weights must be finite and non-negative: column {int(bad[0])} "
                f"is {float(weights[bad[0]])}"
                + (f" ({bad.size} such columns)" if bad.size > 1 else "")
            )
        return weights if self.facts.takes_importance else None

    def decode(
        self, raw: Any, shape: tuple[int, ...] | None = None, out: np.ndarray | None = None
    ) -> np.ndarray:
        """Decode GGML bytes back to values in the logical `shape`.

        `shape` defaults to raw's leading axes plus the row length its last axis encodes.
        Float codecs decode to float32 (f64 to float64), integer dtypes to their own dtype.
        """
        raw = np.ascontiguousarray(_as_bytes(raw))
        kernel = self.kernel()
        if shape is None:
            shape = self._shape_from_raw(raw.shape)
        shape = tuple(int(s) for s in shape)
        if self.facts.flat:
            return kernel.decode(raw.reshape(-1), shape, out)
        need = self.facts.nbytes(shape)
        if raw.size != need:
            raise ShapeError(f"{self.name} data for shape {shape} is {need} bytes, got {raw.size}")
        dst = _output(out, shape, np.dtype(kernel.out_dtype), "decode")
        if dst.size:
            n = shape[-1] if shape else 1
            rb = self.facts.row_bytes(n)
            kernel.decode(raw.reshape(-1, rb), dst.reshape(-1, n))
        return dst

    def _shape_from_raw(self, raw_shape: tuple[int, ...]) -> tuple[int, ...]:
        if self.facts.flat or not raw_shape:
            raise ShapeError(f"decoding {self.name} needs the logical shape")
        rb = raw_shape[-1]
        if rb % self.facts.type_size:
            raise ShapeError(
                f"{self.name} rows are whole blocks of {self.facts.type_size} bytes, "
                f"got a last axis of {rb} bytes"
            )
        return (*raw_shape[:-1], rb // self.facts.type_size * self.facts.block_size)


@functools.cache
def _importance_codecs() -> tuple[str, ...]:
    return tuple(f.name for f in TABLE if f.takes_importance)


def _as_bytes(raw: Any) -> np.ndarray:
    if isinstance(raw, (bytes, bytearray, memoryview)):
        return np.frombuffer(raw, dtype=np.uint8)
    raw = np.asarray(raw)
    if raw.dtype != np.uint8:
        if not raw.flags.c_contiguous:
            raw = np.ascontiguousarray(raw)
        raw = raw.view(np.uint8).reshape(*raw.shape[:-1], -1) if raw.ndim else raw.view(np.uint8)
    return raw


def _output(out: np.ndarray | None, shape: tuple[int, ...], dtype: np.dtype, what: str):
    if out is None:
        return np.empty(shape, dtype=dtype)
    if out.shape != tuple(shape) or out.dtype != dtype or not out.flags.c_contiguous:
        raise ShapeError(
            f"{what} output buffer must be C-contiguous {dtype} of shape {tuple(shape)}, "
            f"got {out.dtype} {out.shape}"
        )
    return out


def _row_chunks(x: np.ndarray, n: int) -> Iterator[tuple[int, np.ndarray]]:
    """Yield (first flat row, 2-D view of rows) covering x's rows in order, without copying."""
    if x.ndim == 1:
        yield 0, x.reshape(1, n)
        return
    if x.flags.c_contiguous and x.dtype == np.float32:
        yield 0, x.reshape(-1, n)
        return
    step = max(1, _CHUNK_VALUES // max(n, 1))
    if x.ndim == 2:
        for start in range(0, x.shape[0], step):
            yield start, x[start : start + step]
        return
    per = int(np.prod(x.shape[1:-1]))
    for i in range(x.shape[0]):
        for start, chunk in _row_chunks(x[i], n):
            yield i * per + start, chunk


def _raise_nonfinite(name: str, shape: tuple[int, ...], src: np.ndarray, start: int) -> None:
    flat = int(np.argmax(~np.isfinite(src.reshape(-1))))
    n = src.shape[-1]
    row, col = start + flat // n, flat % n
    index = (*np.unravel_index(row, shape[:-1] or (1,)), col)
    index = tuple(int(i) for i in index[-len(shape) :]) if shape else ()
    value = float(src.reshape(-1)[flat])
    raise NonFiniteError(
        f"{name} cannot encode {value} at index {index}: block codecs need finite values",
        index,
        value,
    )


def _raise_unencodable(
    name: str, shape: tuple[int, ...], src: np.ndarray, start: int, first: int
) -> None:
    """A block the C library aborts on: its lattice search overflows float32."""
    n = src.shape[-1]
    row, col = start + first // n, first % n
    index = (*np.unravel_index(row, shape[:-1] or (1,)), col)
    index = tuple(int(i) for i in index[-len(shape) :])
    block = src.reshape(-1)[first : first + BY_NAME_FACTS[name].block_size]
    raise UsageError(
        f"{name} cannot encode the block of {block.size} values from index {index}: its "
        f"largest magnitude, {float(np.abs(block).max())}, overflows float32 in ggml's "
        "lattice search, where the C library aborts"
    )


_BY_NAME: dict[str, Codec] = {f.name: Codec(f) for f in TABLE}
_BY_GGML: dict[int, Codec] = {
    c.facts.ggml_id: c for c in _BY_NAME.values() if c.facts.ggml_id is not None
}
_BY_APR: dict[int, Codec] = {
    c.facts.apr_code: c for c in _BY_NAME.values() if c.facts.apr_code is not None
}
_BY_ST: dict[str, Codec] = {
    c.facts.safetensors_dtype: c for c in _BY_NAME.values() if c.facts.safetensors_dtype
}


def names() -> list[str]:
    """Every codec name, in table order."""
    return list(_BY_NAME)


def all_codecs() -> list[Codec]:
    """Every codec, in table order."""
    return list(_BY_NAME.values())


def get(codec: str | int | Codec) -> Codec:
    """Look a codec up by name (any case), by GGML type id, or pass a Codec through.

    An affine configuration (a `config()` dict with id "affine", or a short string such as
    `int4:g128:asym:mse`) gives an `AffineCodec` (bundler.codecs.affine)."""
    if isinstance(codec, Codec):
        return codec
    affine = _affine(codec)
    if affine is not None:
        return affine
    if isinstance(codec, (int, np.integer)) and not isinstance(codec, bool):
        return by_ggml_id(int(codec))
    if isinstance(codec, str):
        found = _BY_NAME.get(codec.strip().lower())
        if found is not None:
            return found
    raise UnknownCodecError(codec, names())


def _affine(codec: Any) -> Any:
    from bundler.codecs.affine.names import looks_affine

    if isinstance(codec, (int, np.integer)) or (isinstance(codec, str) and not looks_affine(codec)):
        return None  # a GGML id or name: the affine codec is not imported
    from bundler.codecs.affine import AffineCodec

    if isinstance(codec, AffineCodec):
        return codec
    if (isinstance(codec, dict) and codec.get("id") == "affine") or (
        isinstance(codec, str) and looks_affine(codec)
    ):
        return AffineCodec(codec)
    return None


def by_ggml_id(type_id: int) -> Codec:
    """The codec with this GGML type id."""
    try:
        return _BY_GGML[type_id]
    except KeyError:
        raise UnknownCodecError(f"GGML type {type_id}", sorted(map(str, _BY_GGML))) from None


def by_apr_code(code: int) -> Codec:
    """The codec with this APR dtype code (old AprQ4/AprQ8 codes 8 and 9 included)."""
    code = APR_LEGACY_ALIASES.get(code, code)
    try:
        return _BY_APR[code]
    except KeyError:
        raise UnknownCodecError(f"APR dtype {code}", sorted(map(str, _BY_APR))) from None


def by_numpy_dtype(dtype: Any) -> Codec:
    """The element codec storing numpy `dtype` unchanged (either byte order)."""
    dtype = np.dtype(dtype)
    found = _by_numpy().get(dtype.newbyteorder("<"))
    if found is None:
        raise UsageError(f"no codec stores numpy dtype {dtype}")
    return found


@functools.cache
def _by_numpy() -> dict[np.dtype, Codec]:
    import ml_dtypes  # noqa: F401  (lets numpy name bfloat16 and the float8 dtypes)

    return {
        np.dtype(c.facts.numpy_dtype): c
        for c in _BY_NAME.values()
        if c.facts.numpy_dtype and not c.facts.is_block
    }


def by_safetensors_dtype(dtype: str) -> Codec:
    """The codec for a SafeTensors dtype string such as 'BF16'."""
    try:
        return _BY_ST[dtype]
    except KeyError:
        raise UnknownCodecError(f"SafeTensors dtype {dtype}", sorted(_BY_ST)) from None
