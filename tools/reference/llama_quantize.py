"""llama.cpp's `llama-quantize` tool as a reference, built from the llama-cpp-python sources.

`binary()` builds the tool once (cmake, target `llama-quantize` only, CPU backend, no GPU
or BLAS back-end, no network code) from the source distribution `assets.llama_cpp_sdist()`
unpacks, and caches the statically linked executable under `assets.cache_dir()` keyed by
that version. The ggml quantizers in it are compiled without FMA contraction, as in
`tools.reference.ggml_c`, so its output is comparable byte for byte.

`run(src, dst, file_type)` quantizes a GGUF file with it; tests use it as the oracle of
the mixed-precision presets (which codec each tensor gets) and of the bytes they hold.

`python -m tools.reference.llama_quantize` builds the tool and prints its path.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from tools.reference import assets, cmake_build
from tools.reference.ggml_c import BuildFailed, NotBuilt, ToolchainMissing

__all__ = ["BUILD_TAG", "BuildFailed", "NotBuilt", "ToolchainMissing", "binary", "run"]

#: Cache key of the build: the source version and the flags below.
BUILD_TAG = f"{assets.LLAMA_CPP[0]}-{assets.LLAMA_CPP[1]}-llama-quantize-nofma-1"

#: A Release build of the tool, static so the cached binary stands alone. GGML_NATIVE is off
#: so no -march=native reaches any target; explicit -ffp-contract=off keeps a CFLAGS/CXXFLAGS
#: environment from enabling multiply-add fusion. Every value llama-quantize writes is computed
#: by ggml-base's C files (ggml-quants.c, ggml.c), which keep the stock -O3; the C++ of
#: libllama, llama-common and the CPU back-end only choose types, parse and copy, so they are
#: compiled at -O0, which cuts the build several times over. The CPU back-end keeps its own
#: per-ISA flags (it is not used to quantize). LLAMA_CURL no longer exists in this llama.cpp
#: (it warns as deprecated); LLAMA_OPENSSL is its network switch.
_CMAKE_OPTIONS = (
    "-DCMAKE_BUILD_TYPE=Release",
    "-DBUILD_SHARED_LIBS=OFF",
    "-DCMAKE_EXPORT_COMPILE_COMMANDS=ON",
    "-DCMAKE_C_FLAGS=-ffp-contract=off",
    "-DCMAKE_CXX_FLAGS=-ffp-contract=off",
    "-DCMAKE_CXX_FLAGS_RELEASE=-O0 -DNDEBUG",
    "-DGGML_NATIVE=OFF",
    "-DGGML_CCACHE=OFF",
    "-DGGML_OPENMP=OFF",
    "-DGGML_BLAS=OFF",
    "-DGGML_CUDA=OFF",
    "-DGGML_METAL=OFF",
    "-DGGML_VULKAN=OFF",
    "-DLLAMA_BUILD_COMMON=ON",
    "-DLLAMA_BUILD_TOOLS=ON",
    "-DLLAMA_BUILD_TESTS=OFF",
    "-DLLAMA_BUILD_EXAMPLES=OFF",
    "-DLLAMA_BUILD_SERVER=OFF",
    "-DLLAMA_BUILD_APP=OFF",
    "-DLLAMA_OPENSSL=OFF",
    "-DLLAMA_LLGUIDANCE=OFF",
)

#: Sources whose arithmetic reaches the bytes llama-quantize writes: the quantizers and
#: dequantizers, the half/bfloat conversions, and the per-tensor mixture rules.
_EXACT_SOURCES = ("ggml-quants.c", "ggml.c", "llama-quant.cpp")


TOOL = cmake_build.LlamaTool(
    "llama-quantize", BUILD_TAG, _CMAKE_OPTIONS, _EXACT_SOURCES, "tools.reference.llama_quantize"
)
build_dir = TOOL.build_dir


def binary(build: bool = True) -> Path:
    """The cached `llama-quantize` executable, built on first call.

    Raises `ToolchainMissing` naming what to install when cmake or a compiler is absent,
    `assets.AssetUnavailable` when the sources cannot be downloaded, `BuildFailed` when
    the build breaks, and `NotBuilt` when the tool is not cached and `build` is False.
    """
    return TOOL.binary(build)


def run(
    src: str | os.PathLike,
    dst: str | os.PathLike,
    file_type: str,
    *options: str,
    threads: int | None = None,
) -> subprocess.CompletedProcess:
    """Run `llama-quantize [options] src dst file_type [threads]`; raises on a non-zero exit."""
    cmd = [str(binary()), *options, str(src), str(dst), file_type]
    if threads is not None:
        cmd.append(str(threads))
    done = subprocess.run(cmd, capture_output=True, text=True)
    if done.returncode:
        raise RuntimeError(f"{' '.join(cmd)} exited {done.returncode}:\n{done.stderr[-3000:]}")
    return done


def main() -> int:
    """Build (or find) the tool and print its path."""
    return cmake_build.print_built(binary)


if __name__ == "__main__":
    sys.exit(main())
