"""The affine codec: a `Scheme` that encodes a float tensor into integer codes, scales and
zero points (an `Encoded`), and decodes them back; and `calibrate`, the same range search
on its own.

Slices: `tensor` is the whole tensor; `channel` every index of `axis` (parameters of shape
1 on the other axes, so [rows, 1] for a matrix's output axis 0); `group` every run of
`group_size` values along the last (input) axis (parameters [..., cols / group_size]).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import ml_dtypes
import numpy as np

from bundler.codecs.affine import arithmetic
from bundler.codecs.affine.calibration import MSE, Entropy, Method, MinMax, method_from
from bundler.codecs.affine.scheme import Scheme, SchemeError, from_config, parse
from bundler.errors import NonFiniteError, ShapeError, UsageError


@dataclass(frozen=True, eq=False)
class Encoded:
    """An affine-quantized tensor: codes in the logical shape, and per-slice parameters
    (`zero_point` None for symmetric schemes, whose zero point is 0)."""

    codec: AffineCodec
    codes: np.ndarray
    scale: np.ndarray
    zero_point: np.ndarray | None

    @property
    def shape(self) -> tuple[int, ...]:
        return tuple(self.codes.shape)

    def decode(self) -> np.ndarray:
        return self.codec.decode(self)


@dataclass(frozen=True)
class Calibration:
    """Calibrated ranges of each slice, and the scheme's scales and zero points for them
    (all in the parameter shape; `zero_point` is 0 for symmetric schemes)."""

    lo: np.ndarray
    hi: np.ndarray
    scale: np.ndarray
    zero_point: np.ndarray


class AffineCodec:
    """One affine codec; its configuration (`scheme`) is its identity."""

    __slots__ = ("scheme",)

    def __init__(self, scheme: Scheme | str | dict[str, Any]):
        if isinstance(scheme, str):
            scheme = parse(scheme)
        elif isinstance(scheme, dict):
            scheme = from_config(scheme)
        self.scheme = scheme

    @property
    def name(self) -> str:
        return self.scheme.name

    def config(self) -> dict[str, Any]:
        """Plain-JSON identity; `bundler.codec(config)` gives this codec back."""
        return self.scheme.config()

    def __repr__(self) -> str:
        return f"AffineCodec({self.name!r})"

    def __str__(self) -> str:
        return self.name

    def __eq__(self, other: object) -> bool:
        return isinstance(other, AffineCodec) and other.scheme == self.scheme

    def __hash__(self) -> int:
        return hash(self.scheme)

    @property
    def code_dtype(self) -> np.dtype:
        return arithmetic.code_dtype(self.scheme.bits, self.scheme.symmetric)

    @property
    def scale_dtype(self) -> np.dtype:
        return arithmetic.SCALE_NUMPY[self.scheme.scale_dtype]

    def parameter_shape(self, shape: tuple[int, ...]) -> tuple[int, ...]:
        """Shape of the scales and zero points of a tensor of `shape`."""
        return _Layout(self.scheme, tuple(shape)).param_shape

    def calibrate(self, x: Any) -> Calibration:
        """Ranges, scales and zero points this codec would use for `x`."""
        x = _as_float32(x)
        layout = _Layout(self.scheme, x.shape)
        lo, hi = _ranges(x, layout, self.scheme.calibration, self.scheme)
        sch = self.scheme
        scale, zero = arithmetic.parameters(
            lo, hi, sch.qmin, sch.qmax, sch.symmetric, sch.scale_dtype, sch.scale_rule
        )
        shape = layout.param_shape
        return Calibration(lo.reshape(shape), hi.reshape(shape), scale.reshape(shape),
                           zero.reshape(shape))  # fmt: skip

    def encode(
        self, x: Any, calibration: Calibration | None = None, out: Encoded | None = None
    ) -> Encoded:
        """Calibrate and quantize `x` (refusing NaN and infinity with their position);
        `calibration`, when given, is what `calibrate(x)` returned. `out`: an `Encoded` of
        this codec and x's shape (an earlier result) whose arrays are overwritten and
        returned instead of new ones (after an error, what they hold is undefined)."""
        from bundler.codecs.affine import runs

        x = _as_float32(x)
        layout = _Layout(self.scheme, x.shape)
        self._check_out(out, layout)
        if calibration is None:
            encoded = self._encode_rows(x, layout, out)
            if encoded is not None:
                return encoded
        cal = self.calibrate(x) if calibration is None else calibration
        codes = np.empty(x.shape, dtype=self.code_dtype) if out is None else out.codes
        p, s, q = layout.view3
        scale2 = cal.scale.astype(np.float64).reshape(-1, s)
        zero2 = cal.zero_point.astype(np.float64).reshape(-1, s)
        runs.quantize(
            x.reshape(p, s, q), scale2, zero2, self.scheme.qmin, self.scheme.qmax,
            self.scheme.division == "f32", codes.reshape(p, s, q),
        )  # fmt: skip
        zero = None if self.scheme.symmetric else cal.zero_point.astype(self.code_dtype)
        return _filled(out, Encoded(self, codes, cal.scale, zero))

    def _check_out(self, out: Any, layout: _Layout) -> None:
        """Refuse an `out` that is not an encoding of this codec and layout's shape."""
        if out is None:
            return
        shape, pshape = layout.shape, layout.param_shape
        arrays = []
        if isinstance(out, Encoded):
            arrays = [(out.codes, shape, self.code_dtype), (out.scale, pshape, self.scale_dtype)]
            if not self.scheme.symmetric:
                arrays.append((out.zero_point, pshape, self.code_dtype))
        fits = bool(arrays) and out.codec == self and all(
            isinstance(a, np.ndarray) and a.shape == sh and a.dtype == dt and a.flags.c_contiguous
            and a.flags.writeable
            for a, sh, dt in arrays
        )  # fmt: skip
        if not fits:
            got = type(out).__name__
            if isinstance(out, Encoded):
                got = f"{out.codec.name}, shape {out.shape}"
            raise UsageError(
                f"{self.name}: out must be a writable encoding of shape {shape} by this codec "
                f"(got {got})"
            )

    def _encode_rows(self, x: np.ndarray, layout: _Layout, out: Encoded | None) -> Encoded | None:
        """Slices that are rows of memory (groups; channels of the first axis) calibrated
        (`_calibrated_rows`) and quantized in one compiled pass, and MinMax columns
        (channels of the last axis). None: another granularity, or a row held a
        non-finite value or a scale overflowed its dtype (the general path then says
        where)."""
        from bundler.codecs.halftable import HALF_TO_F32

        p, s, q = layout.view3
        sch = self.scheme
        minmax = sch.calibration.token == "minmax"
        if minmax and sch.granularity == "channel" and p > 1 and q == 1:
            # channels of the last axis: one block down the first axis of x as (p, s)
            try:
                codes, scale, zp = encode_blocks_down(self, x.reshape(p, s), p)
            except (NonFiniteError, UsageError):
                return None  # the general path names the place in x's own shape
            shape = layout.param_shape
            zp = None if zp is None else zp.reshape(shape)
            encoded = Encoded(self, codes.reshape(x.shape), scale.reshape(shape), zp)
            return _filled(out, encoded)
        if not (sch.granularity == "group" or (sch.granularity == "channel" and p == 1)):
            return None
        codes = np.empty(x.shape, dtype=self.code_dtype) if out is None else out.codes
        # float32 scales are written as they are stored (the float32 scale of a range
        # within finite float32 extremes is finite); half-width ones go through float64
        f32 = sch.scale_dtype == "f32"
        if out is not None and f32:
            scale = out.scale.reshape(-1)
        else:
            scale = np.empty(p * s, dtype=np.float32 if f32 else np.float64)
        if out is not None and not sch.symmetric:
            zero = out.zero_point.reshape(-1)
        else:
            zero = np.empty(p * s, dtype=self.code_dtype)
        dtype = self.scale_dtype
        tiny = float(ml_dtypes.finfo(dtype).smallest_subnormal)
        kind = arithmetic.SCALE_DTYPES.index(sch.scale_dtype)
        extreme, div32 = sch.scale_rule == "extreme", sch.division == "f32"
        common = (sch.qmin, sch.qmax, sch.symmetric, extreme, kind, tiny, HALF_TO_F32, div32,
                  codes.reshape(p * s, q), scale, zero)  # fmt: skip
        if self._calibrated_rows(x, layout, common):
            return None
        if not (f32 or np.isfinite(scale).all()):
            return None
        shape = layout.param_shape
        zp = None if sch.symmetric else zero.reshape(shape)
        scales = scale.astype(dtype, copy=False).reshape(shape)
        return _filled(out, Encoded(self, codes, scales, zp))

    def _calibrated_rows(self, x: np.ndarray, layout: _Layout, common: tuple[Any, ...]) -> int:
        """The rows of x (`layout.view3` (P, S, Q) as P * S rows) calibrated and quantized
        into `common`'s arrays (see `kernels.minmax_rows` for the arguments it holds), in
        one pass with the method's search where it has a kernel for rows (MinMax, Entropy,
        MSE of many rows); how many rows held a NaN or an infinity."""
        from bundler.codecs.affine import runs

        p, s, q = layout.view3
        rows = x.reshape(p * s, q)
        bits = rows.view(np.int32)
        method = self.scheme.calibration
        if isinstance(method, MSE) and p * s >= runs.FEW_SLICES:
            return runs.mse_rows(rows, bits, *MSE.GRID, *common)
        entropy = Entropy.search(self.scheme, q) if isinstance(method, Entropy) else None
        if entropy is not None:
            return runs.entropy_rows(rows, bits, *entropy, *common)
        lo = hi = np.empty(0)
        if not isinstance(method, (MinMax, Entropy)):  # Entropy here: MinMax's ranges
            lo, hi = _ranges(x, layout, method, self.scheme)
        return runs.minmax_rows(rows, bits, lo, hi, *common)

    def decode(self, encoded: Encoded) -> np.ndarray:
        """The float32 values `(codes - zero_point) * scale`."""
        return dequantize(
            encoded.codes, encoded.scale, encoded.zero_point, self.scheme, encoded.shape
        )


def encode_blocks_down(
    codec: AffineCodec, x: Any, size: int, nibbles: bool = False
) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """MinMax blocks of `size` consecutive values down the first axis of a matrix x [K, N]
    (a last, shorter block has its own range), with `codec`'s bits, signedness, scale rule,
    scale dtype and division (its granularity and calibration aside): codes [K, N] (x's
    layout), scales and zero points (None when symmetric) [ceil(K / size), N]. The blocks
    of a MatMul weight along its reduction axis, read without transposing it.

    `nibbles` (4-bit codes, even `size`): the codes transposed and packed instead, uint8
    [N, blocks, size / 2], offset to the unsigned range, two a byte, low nibble first, the
    last block padded with its zero point's code (ONNX Runtime's MatMulNBits layout)."""
    from bundler.codecs.affine import runs
    from bundler.codecs.halftable import HALF_TO_F32

    x = _as_float32(x)
    sch = codec.scheme
    if x.ndim != 2 or size < 1 or (nibbles and (sch.bits != 4 or size % 2)):
        need = " (4 bits, even size)" if nibbles else ""
        raise ShapeError(
            f"{sch.name}: blocks of {size} down the first axis need a matrix{need}, got shape "
            f"{x.shape}"
        )
    k, n = x.shape
    blocks = -(-k // size)
    codes = np.empty((0, n) if nibbles else x.shape, dtype=codec.code_dtype)
    packed = np.empty((n, blocks, size // 2) if nibbles else (0, 0, 0), dtype=np.uint8)
    scale = np.empty((blocks, n), dtype=np.float64)
    zero = np.empty((blocks, n), dtype=np.float64)
    tiny = float(ml_dtypes.finfo(codec.scale_dtype).smallest_subnormal)
    kind = arithmetic.SCALE_DTYPES.index(sch.scale_dtype)
    bad = runs.minmax_blocks_down(
        x, x.view(np.int32), size, sch.qmin, sch.qmax, sch.symmetric, sch.scale_rule == "extreme",
        kind, tiny, HALF_TO_F32, sch.division == "f32", codes, packed, scale, zero,
    )  # fmt: skip
    if bad:
        _refuse_non_finite(x, sch)
    if not np.isfinite(scale).all():
        arithmetic.parameters(scale, scale, 0, 1, True, sch.scale_dtype)  # says which scale
    zp = None if sch.symmetric else zero.astype(codec.code_dtype)
    return packed if nibbles else codes, scale.astype(codec.scale_dtype), zp


def dequantize(
    codes: np.ndarray,
    scale: np.ndarray,
    zero_point: np.ndarray | None,
    scheme: Scheme,
    shape: tuple[int, ...] | None = None,
) -> np.ndarray:
    """Float32 values of codes and parameters laid out as `scheme` lays them out."""
    codes = np.asarray(codes)
    shape = tuple(codes.shape) if shape is None else tuple(shape)
    layout = _Layout(scheme, shape)
    want = layout.param_shape
    scale = np.asarray(scale)
    if math.prod(scale.shape) != math.prod(want):
        raise ShapeError(
            f"{scheme.name}: a tensor of shape {shape} has scales of shape {want}, "
            f"got {scale.shape}"
        )
    scale = scale.reshape(want)
    zero = None if zero_point is None else np.asarray(zero_point).reshape(want)
    if scheme.granularity == "group":
        lead, cols = shape[:-1], shape[-1]
        g = scheme.group_size
        grouped = codes.reshape(*lead, cols // g, g)
        z = None if zero is None else zero[..., None]
        return arithmetic.dequantize(grouped, scale[..., None], z).reshape(shape)
    return arithmetic.dequantize(codes.reshape(shape), scale, zero)


def calibrate(
    x: Any, method: Method | str | dict[str, Any] = "minmax", scheme: Any = None, **fields: Any
) -> Calibration:
    """Calibrate `x` with `method` for a scheme (an affine codec, its string or config, or
    Scheme fields such as bits=4, symmetric=False, granularity="group", group_size=32;
    default int8 symmetric per tensor): the ranges, scales and zero points per slice."""
    if scheme is None:
        base = Scheme(**fields)
    else:
        base = AffineCodec(scheme).scheme if not isinstance(scheme, AffineCodec) else scheme.scheme
        if fields:
            base = base.replace(**fields)
    return AffineCodec(base.replace(calibration=method_from(method))).calibrate(x)


class _Layout:
    """How a tensor of `shape` splits into the slices of a scheme."""

    def __init__(self, scheme: Scheme, shape: tuple[int, ...]):
        self.scheme = scheme
        self.shape = shape
        n = math.prod(shape)
        if n == 0:
            raise ShapeError(f"{scheme.name} cannot quantize an empty tensor (shape {shape})")
        if scheme.granularity == "tensor":
            self.view3 = (1, 1, n)
            self.param_shape: tuple[int, ...] = (1,)
        elif scheme.granularity == "channel":
            ndim = max(len(shape), 1)
            if not -ndim <= scheme.axis < ndim:
                raise SchemeError(
                    f"{scheme.name}: axis {scheme.axis} is out of range for shape {shape}"
                )
            a = scheme.axis % ndim
            dims = shape or (1,)
            self.view3 = (math.prod(dims[:a]), dims[a], math.prod(dims[a + 1 :]))
            self.param_shape = tuple(d if i == a else 1 for i, d in enumerate(dims))
        else:
            cols = shape[-1] if shape else 1
            g = scheme.group_size
            if cols % g:
                raise ShapeError(
                    f"{scheme.name}: group size {g} does not divide the last axis of shape "
                    f"{shape} ({cols} values)"
                )
            self.view3 = (n // cols, cols // g, g)
            self.param_shape = (*shape[:-1], cols // g)

    def slices(self, x: np.ndarray) -> np.ndarray:
        """(slice, values) rows; a view except for channels of an inner axis."""
        p, s, q = self.view3
        if self.scheme.granularity == "channel" and p > 1:
            return np.ascontiguousarray(np.moveaxis(x.reshape(p, s, q), 1, 0)).reshape(s, -1)
        if self.scheme.granularity == "group":
            return x.reshape(p * s, q)
        return x.reshape(s, p * q) if p == 1 else x.reshape(1, -1)


def _filled(out: Encoded | None, encoded: Encoded) -> Encoded:
    """`encoded`, or `out` with `encoded`'s arrays copied in where they are not its own."""
    if out is None:
        return encoded
    pairs = [(out.codes, encoded.codes), (out.scale, encoded.scale)]
    if out.zero_point is not None:
        pairs.append((out.zero_point, encoded.zero_point))
    for mine, new in pairs:
        if not np.may_share_memory(mine, new):
            mine[...] = new
    return out


def _as_float32(x: Any) -> np.ndarray:
    a = np.asarray(x)
    if a.dtype.kind not in "fiub" and a.dtype.name != "bfloat16":
        raise ShapeError(f"affine codecs quantize numbers, got dtype {a.dtype}")
    return np.ascontiguousarray(a, dtype=np.float32)


def _ranges(
    x: np.ndarray, layout: _Layout, method: Method, scheme: Scheme
) -> tuple[np.ndarray, np.ndarray]:
    from bundler.codecs.affine import runs

    slices = np.ascontiguousarray(layout.slices(x))
    lo = np.empty(slices.shape[0], dtype=np.float64)
    hi = np.empty(slices.shape[0], dtype=np.float64)
    if runs.extremes(slices.view(np.int32), lo, hi):
        _refuse_non_finite(x, scheme)
    lo, hi = method.ranges(slices, lo, hi, scheme)
    return np.asarray(lo, dtype=np.float64), np.asarray(hi, dtype=np.float64)


def _refuse_non_finite(x: np.ndarray, scheme: Scheme) -> None:
    """A NonFiniteError naming the first NaN or infinity of `x` and where it is."""
    flat = int(np.argmax(~np.isfinite(x.reshape(-1))))
    index = tuple(int(i) for i in np.unravel_index(flat, x.shape)) if x.ndim else ()
    value = float(x.reshape(-1)[flat])
    raise NonFiniteError(
        f"{scheme.name} cannot quantize {value} at index {index}: values must be finite",
        index,
        value,
    )
