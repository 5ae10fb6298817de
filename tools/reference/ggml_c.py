"""The ggml C library as a reference: built from the llama-cpp-python sources, called by ctypes.

`library()` builds `libggml-base.so` once (cmake, the stock flags of that ggml version, no
FMA contraction) from the source distribution `assets.llama_cpp_sdist()` unpacks, caches it
under `assets.cache_dir()` keyed by that version, and loads it. `quantize` and `dequantize`
run the C reference codecs (`ggml_quantize_chunk`, with or without an importance matrix,
and each type's `to_float`) on numpy arrays, so tests and benchmarks can compare against them.

`python -m tools.reference.ggml_c` builds the library and prints its path.
"""

from __future__ import annotations

import ctypes
import itertools
import shutil  # noqa: F401  (its `which` is what the toolchain check consults)
import sys
import threading
from pathlib import Path

import numpy as np

from bundler.codecs import registry
from tools.reference import assets, cmake_build
from tools.reference.cmake_build import FMA_FLAGS as _FMA_FLAGS  # noqa: F401
from tools.reference.cmake_build import BuildFailed as BuildFailed
from tools.reference.cmake_build import NotBuilt as NotBuilt
from tools.reference.cmake_build import ToolchainMissing as ToolchainMissing
from tools.reference.cmake_build import check_toolchain as _check_toolchain  # noqa: F401

#: Cache key of the build: the source version and the flags below.
BUILD_TAG = f"{assets.LLAMA_CPP[0]}-{assets.LLAMA_CPP[1]}-ggml-base-nofma-1"

#: Explicit flags, so a CFLAGS/CXXFLAGS environment cannot slip -march=native or -mfma in;
#: -ffp-contract=off is what a stock x86-64 build without FMA amounts to anyway.
_CMAKE_OPTIONS = (
    "-DCMAKE_BUILD_TYPE=Release",
    "-DBUILD_SHARED_LIBS=ON",
    "-DCMAKE_EXPORT_COMPILE_COMMANDS=ON",
    "-DCMAKE_C_FLAGS=-ffp-contract=off",
    "-DCMAKE_CXX_FLAGS=-ffp-contract=off",
    "-DGGML_NATIVE=OFF",
    "-DGGML_CCACHE=OFF",
    "-DLLAMA_BUILD_COMMON=OFF",
    "-DLLAMA_BUILD_TESTS=OFF",
    "-DLLAMA_BUILD_TOOLS=OFF",
    "-DLLAMA_BUILD_EXAMPLES=OFF",
    "-DLLAMA_BUILD_SERVER=OFF",
    "-DLLAMA_BUILD_APP=OFF",
    "-DLLAMA_OPENSSL=OFF",
)

#: GGML ids `ggml_quantize_chunk` handles in this ggml version (its switch); any other id hits
#: an assertion that aborts the process, so it must never be passed.
_CHUNK_TYPES = frozenset(
    {0, 1, 2, 3, 6, 7, 8, 10, 11, 12, 13, 14, 16, 17, 18, 19, 20, 21, 22, 23, 29, 30, 34, 35,
     39, 40, 41, 42}
)  # fmt: skip
#: GGML ids whose quantizer asserts an imatrix (`ggml_quantize_requires_imatrix`: IQ2_XXS,
#: IQ2_XS, IQ1_S): `quantize` refuses them without one instead of letting ggml abort.
_NEEDS_IMATRIX = frozenset({16, 17, 19})
#: Exported per-row functions for types that `ggml_quantize_chunk` and the type traits lack.
_ROW_QUANTIZERS = {9: "quantize_row_q8_1_ref", 15: "quantize_row_q8_K_ref"}
_ROW_DEQUANTIZERS = {15: "dequantize_row_q8_K"}

_ROW_FN = ctypes.CFUNCTYPE(None, ctypes.c_void_p, ctypes.c_void_p, ctypes.c_int64)


class _TypeTraits(ctypes.Structure):
    # struct ggml_type_traits of ggml.h (ggml 0.25.3, llama-cpp-python 0.3.36)
    _fields_ = (
        ("type_name", ctypes.c_char_p),
        ("blck_size", ctypes.c_int64),
        ("blck_size_interleave", ctypes.c_int64),
        ("type_size", ctypes.c_size_t),
        ("is_quantized", ctypes.c_bool),
        ("to_float", ctypes.c_void_p),
        ("from_float_ref", ctypes.c_void_p),
    )


_lock = threading.Lock()
_lib: ctypes.CDLL | None = None


def build_dir() -> Path:
    """Where the built library of this version is cached."""
    return assets.cache_dir() / "ggml-c" / BUILD_TAG


def library_path(build: bool = True) -> Path:
    """The cached `libggml-base.so`, built on first call (or `NotBuilt` if `build` is False)."""
    return cmake_build.cached(
        build_dir() / "libggml-base.so", _build, build, "tools.reference.ggml_c"
    )


def _build(target: Path) -> None:
    cmake_build.build_target(target, "ggml-base", _CMAKE_OPTIONS, ("ggml-quants.c",), "ggml-build-")


def library(build: bool = True) -> ctypes.CDLL:
    """The loaded C library (built and cached on first use unless `build` is False).

    Raises `ToolchainMissing` naming what to install when cmake or a compiler is absent,
    `assets.AssetUnavailable` when the sources cannot be downloaded, and `NotBuilt` when
    the library is not cached and `build` is False.
    """
    global _lib
    with _lock:
        if _lib is None:
            lib = ctypes.CDLL(str(library_path(build)))
            lib.ggml_get_type_traits.restype = ctypes.POINTER(_TypeTraits)
            lib.ggml_get_type_traits.argtypes = (ctypes.c_int,)
            lib.ggml_quantize_chunk.restype = ctypes.c_size_t
            lib.ggml_quantize_chunk.argtypes = (
                ctypes.c_int,
                ctypes.c_void_p,
                ctypes.c_void_p,
                ctypes.c_int64,
                ctypes.c_int64,
                ctypes.c_int64,
                ctypes.c_void_p,
            )
            _lib = lib
    return _lib


def _type(type_name: str) -> tuple[int, _TypeTraits]:
    codec = registry.get(type_name)
    if codec.facts.ggml_id is None:
        raise ValueError(f"{codec.name} has no GGML type id")
    traits = library().ggml_get_type_traits(codec.facts.ggml_id).contents
    return codec.facts.ggml_id, traits


def _row_ranges(nrows: int, threads: int) -> list[tuple[int, int]]:
    threads = max(1, min(int(threads), nrows))
    bounds = [nrows * i // threads for i in range(threads + 1)]
    return [(a, b) for a, b in itertools.pairwise(bounds) if b > a]


def _run(ranges: list[tuple[int, int]], work) -> None:
    if len(ranges) == 1:
        work(*ranges[0])
        return
    workers = [threading.Thread(target=work, args=r) for r in ranges]
    for w in workers:
        w.start()
    for w in workers:
        w.join()


def quantize(
    type_name: str,
    x: np.ndarray,
    threads: int = 1,
    imatrix: np.ndarray | None = None,
    out: np.ndarray | None = None,
) -> np.ndarray:
    """The C reference encoding of float32 rows `x` (rows, n): uint8 array (rows, row bytes).

    Uses `ggml_quantize_chunk(type, ..., imatrix)`, or the reference row function of
    the activation types it does not handle (q8_1, q8_k). `imatrix`: None, or one float32
    weight per column (an importance-matrix row, the same for every row), the weights
    llama-quantize passes. `threads` > 1 splits the rows over Python threads (ctypes
    releases the GIL). `out`: a C-contiguous uint8 array of the result's shape to write
    into (a benchmark's, allocated once) instead of a new zero-filled one.
    """
    type_id, traits = _type(type_name)
    x = np.ascontiguousarray(x, dtype=np.float32)
    if x.ndim == 1:
        x = x.reshape(1, -1)
    if x.ndim != 2:
        raise ValueError(f"quantize takes rows (2-D), got shape {x.shape}")
    nrows, n = x.shape
    if n % traits.blck_size:
        raise ValueError(f"{type_name}: row length {n} is not a multiple of {traits.blck_size}")
    weights = None
    if imatrix is not None:
        weights = np.ascontiguousarray(imatrix, dtype=np.float32)
        if weights.shape != (n,):
            raise ValueError(f"imatrix must hold {n} weights (one per column), got {weights.shape}")
    elif type_id in _NEEDS_IMATRIX:
        raise ValueError(f"ggml cannot quantize {type_name} without an imatrix")
    row_bytes = n // traits.blck_size * traits.type_size
    out = _output(out, (nrows, row_bytes), np.uint8)
    if x.size == 0:
        return out
    lib = library()
    if type_id in _CHUNK_TYPES:
        qw = None if weights is None else weights.ctypes.data

        def work(a: int, b: int) -> None:
            lib.ggml_quantize_chunk(type_id, x[a].ctypes.data, out[a].ctypes.data, 0, b - a, n, qw)

    else:
        if type_id not in _ROW_QUANTIZERS:
            raise ValueError(f"the C library cannot quantize {type_name} without an imatrix")
        fn = _ROW_FN(ctypes.cast(getattr(lib, _ROW_QUANTIZERS[type_id]), ctypes.c_void_p).value)

        def work(a: int, b: int) -> None:
            fn(x[a].ctypes.data, out[a].ctypes.data, (b - a) * n)

    _run(_row_ranges(nrows, threads), work)
    return out


def can_quantize(type_name: str, imatrix: bool = False) -> bool:
    """True when the C library can quantize this type without an imatrix (or, `imatrix`,
    with one: the types `ggml_quantize_chunk` handles; weights are ignored by those
    without a weighted quantizer)."""
    type_id, _ = _type(type_name)
    if imatrix:
        return type_id in _CHUNK_TYPES
    return (type_id in _CHUNK_TYPES and type_id not in _NEEDS_IMATRIX) or (
        type_id in _ROW_QUANTIZERS
    )


def can_dequantize(type_name: str) -> bool:
    """True when the C library has a dequantizer for this type."""
    type_id, traits = _type(type_name)
    return bool(traits.to_float) or type_id in _ROW_DEQUANTIZERS


def dequantize(
    type_name: str,
    raw: np.ndarray,
    shape: tuple[int, ...],
    threads: int = 1,
    out: np.ndarray | None = None,
) -> np.ndarray:
    """The C reference decoding (the type's `to_float`) of GGML bytes into float32 `shape`
    (into `out`, C-contiguous float32 of that shape, when given)."""
    type_id, traits = _type(type_name)
    shape = tuple(int(s) for s in shape)
    n = shape[-1] if shape else 1
    if n % traits.blck_size:
        raise ValueError(f"{type_name}: row length {n} is not a multiple of {traits.blck_size}")
    nrows = int(np.prod(shape[:-1])) if len(shape) > 1 else 1
    row_bytes = n // traits.blck_size * traits.type_size
    raw = np.ascontiguousarray(np.frombuffer(np.ascontiguousarray(raw).data, dtype=np.uint8))
    if raw.size != nrows * row_bytes:
        raise ValueError(
            f"{type_name} shape {shape} needs {nrows * row_bytes} bytes, got {raw.size}"
        )
    raw = raw.reshape(nrows, row_bytes)
    out = _output(None if out is None else out.reshape(nrows, n), (nrows, n), np.float32)
    if out.size == 0:
        return out.reshape(shape)
    if traits.to_float:
        fn = _ROW_FN(traits.to_float)
    elif type_id in _ROW_DEQUANTIZERS:
        lib = library()
        fn = _ROW_FN(ctypes.cast(getattr(lib, _ROW_DEQUANTIZERS[type_id]), ctypes.c_void_p).value)
    else:
        raise ValueError(f"the C library has no dequantizer for {type_name}")

    def work(a: int, b: int) -> None:
        fn(raw[a].ctypes.data, out[a].ctypes.data, (b - a) * n)

    _run(_row_ranges(nrows, threads), work)
    return out.reshape(shape)


def _output(out: np.ndarray | None, shape: tuple[int, ...], dtype: type) -> np.ndarray:
    """`out` checked to be a C-contiguous array of `shape` and `dtype`, or a new zero-filled one."""
    if out is None:
        return np.zeros(shape, dtype=dtype)
    if out.shape != shape or out.dtype != dtype or not out.flags.c_contiguous:
        raise ValueError(
            f"out must be C-contiguous {np.dtype(dtype)} {shape}, got {out.dtype} {out.shape}"
        )
    return out


def main() -> int:
    """Build (or find) the library, load it, and print its path."""
    return cmake_build.print_built(_loaded_path)


def _loaded_path() -> Path:
    library()
    return library_path(build=False)


if __name__ == "__main__":
    sys.exit(main())
