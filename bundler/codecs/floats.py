"""Element codecs: F32, F16, BF16, F64, the 8-bit floats and the integer/bool dtypes.

These store one value per element, little-endian. NaN and infinity are representable and
kept (F16 overflow becomes infinity, as in the reference). F16 and BF16 are ggml's
conversions bit for bit, NaN included (F16 stores every NaN as the quiet NaN 0x7E00 with
its sign): float32 arrays of COMPILED_FROM values or more go through the compiled kernels
of `floatkernels` (threaded), smaller ones and other dtypes through numpy, so that a small
conversion does not load the compiler.
"""

from __future__ import annotations

import ml_dtypes  # noqa: F401  (registers bfloat16 and the float8 dtypes with numpy)
import numpy as np

from bundler.codecs.facts import TABLE
from bundler.codecs.halftable import HALF_TO_F32
from bundler.codecs.kernels import Compiled, Kernel, split_run
from bundler.errors import UsageError

_BF16_CHUNK = 1 << 18
#: Values from which a float32 array is converted by the compiled kernels.
COMPILED_FROM = 1 << 18


def _compiled(a: np.ndarray) -> bool:
    return a.size >= COMPILED_FROM and a.flags.c_contiguous


#: Elements per unit of work handed to a thread by the compiled kernels (`floatkernels`).
STEP = 4096
#: The compiled kernels, by name (see `kernels.Compiled`).
_COMPILED = {
    name: Compiled("bundler.codecs.floatkernels", name)
    for name in ("f16_encode", "f16_decode", "bf16_encode", "bf16_decode")
}


def _run(name: str, count: int, *args: np.ndarray) -> None:
    """The compiled kernel `name` of floatkernels over `count` values, shared by threads."""
    split_run(_COMPILED[name], -(-count // STEP), *args)


def bf16_bits(x: np.ndarray) -> np.ndarray:
    """BF16 bit patterns of float32 values, as ggml rounds them.

    Round to nearest even on the float32 bits; a NaN keeps its top bits with the quiet bit
    (0x40) set (ggml `ggml_compute_fp32_to_bf16`).
    """
    u = np.ascontiguousarray(x, dtype=np.float32).view(np.uint32)
    rounded = (u + (np.uint32(0x7FFF) + ((u >> np.uint32(16)) & np.uint32(1)))) >> np.uint32(16)
    nan = (u & np.uint32(0x7FFFFFFF)) > np.uint32(0x7F800000)
    if nan.any():
        rounded = np.where(nan, (u >> np.uint32(16)) | np.uint32(0x40), rounded)
    return rounded.astype(np.uint16)


def _encode_bf16(src: np.ndarray, dst: np.ndarray) -> int:
    flat_src, flat_dst = src.reshape(-1), dst.view(np.uint16).reshape(-1)
    if src.dtype == np.float32 and _compiled(src):
        _run("bf16_encode", flat_src.size, flat_src.view(np.uint32), flat_dst)
        return 0
    for start in range(0, flat_src.size, _BF16_CHUNK):  # bounds the temporaries
        flat_dst[start : start + _BF16_CHUNK] = bf16_bits(flat_src[start : start + _BF16_CHUNK])
    return 0


def _decode_bf16(raw: np.ndarray, dst: np.ndarray) -> None:
    if _compiled(dst):
        _run("bf16_decode", dst.size, raw.view("<u2").reshape(-1), dst.view(np.uint32).reshape(-1))
        return
    (dst.view(np.uint32))[...] = raw.view("<u2").astype(np.uint32) << np.uint32(16)


def _encode_f16(src: np.ndarray, dst: np.ndarray) -> int:
    halves = dst.view(np.uint16)
    if src.dtype == np.float32 and _compiled(src):
        _run("f16_encode", src.size, src.reshape(-1), halves.reshape(-1))
        return 0
    with np.errstate(over="ignore", invalid="ignore"):  # F16 overflow becomes infinity
        np.copyto(halves.view(np.float16), src, casting="same_kind")
    nan = np.isnan(src)
    if nan.any():  # ggml stores the quiet NaN 0x7E00, whatever the payload
        halves[nan] = np.where(np.signbit(src[nan]), np.uint16(0xFE00), np.uint16(0x7E00))
    return 0


def _decode_f16(raw: np.ndarray, dst: np.ndarray) -> None:
    if _compiled(dst):
        _run("f16_decode", dst.size, raw.view("<u2").reshape(-1), dst.reshape(-1), HALF_TO_F32)
        return
    dst[...] = raw.view(np.float16)


def _copy_kernel(dtype: np.dtype, out_dtype: np.dtype, float_input: bool) -> Kernel:
    def encode(src: np.ndarray, dst: np.ndarray) -> int:
        try:
            with np.errstate(over="ignore"):  # F16 overflow becomes infinity, as in ggml
                np.copyto(dst.view(dtype), src, casting="same_kind")
        except TypeError as exc:
            raise UsageError(f"cannot store {src.dtype} values as {dtype}: {exc}") from None
        return 0

    def decode(raw: np.ndarray, dst: np.ndarray) -> None:
        dst[...] = raw.view(dtype)

    return Kernel(encode, decode, out_dtype, float_input)


def _guarded(encode, dtype: np.dtype):
    """`encode` with a non-float source refused as a usage error (as the copy kernels do)."""

    def call(src: np.ndarray, dst: np.ndarray) -> int:
        if not np.can_cast(src.dtype, dtype, casting="same_kind"):
            raise UsageError(f"cannot store {src.dtype} values as {dtype}")
        return encode(src, dst)

    return call


def _cast_kernel(dtype: np.dtype) -> Kernel:
    """An 8-bit float type: float32 in, rounded by ml_dtypes, float32 out."""

    def encode(src: np.ndarray, dst: np.ndarray) -> int:
        dst.view(dtype)[...] = src.astype(dtype)
        return 0

    def decode(raw: np.ndarray, dst: np.ndarray) -> None:
        dst[...] = raw.view(dtype).astype(np.float32)

    return Kernel(encode, decode, np.float32, True)


def _kernel_for(name: str, dtype: np.dtype) -> Kernel:
    if name == "bf16":
        return Kernel(_encode_bf16, _decode_bf16, np.float32, True)
    if name == "f16":
        return Kernel(_guarded(_encode_f16, dtype), _decode_f16, np.float32, True)
    if name == "f32":
        return _copy_kernel(dtype, np.dtype(np.float32), True)
    if name.startswith("f8"):
        return _cast_kernel(dtype)
    return _copy_kernel(dtype, dtype.newbyteorder("="), False)


KERNELS: dict[str, Kernel] = {
    f.name: _kernel_for(f.name, np.dtype(f.numpy_dtype))
    for f in TABLE
    if f.kernels == __name__ and f.numpy_dtype is not None
}
