"""llama.cpp's `llama-quantize` as a speed reference: a plain Release build, every file at -O3.

The oracle build (`tools.reference.llama_quantize`) compiles the C++ of libllama, llama-common
and the CPU back-end at -O0 to build faster; that is fine for comparing bytes but would make
the tool look slower than the one users run. This build is of the same source distribution
with cmake's stock Release flags (`-O3 -DNDEBUG` for C and C++) and nothing else changed:
static, CPU back-end only, no BLAS, no OpenMP (llama-quantize uses its own `std::thread`
workers), no network code. GGML_NATIVE is off, so no `-march=native` anywhere: the CPU
back-end gets its stock x86-64 per-ISA flags (AVX2, FMA, F16C...), ggml-base (which holds
every quantizer llama-quantize calls) gets none, so its bytes equal the oracle build's.

`binary()` builds it once and caches the executable under `assets.cache_dir()` keyed by
`BUILD_TAG`; `python -m tools.reference.llama_quantize_o3` builds it and prints its path.
`bundler bench convert` times it beside bundler.
"""

from __future__ import annotations

import sys
from pathlib import Path

from tools.reference import assets, cmake_build
from tools.reference.llama_quantize import _CMAKE_OPTIONS as _ORACLE_OPTIONS
from tools.reference.llama_quantize import _EXACT_SOURCES

__all__ = ["BUILD_TAG", "binary", "build_dir"]

#: Cache key of the build: the source version and the flags below.
BUILD_TAG = f"{assets.LLAMA_CPP[0]}-{assets.LLAMA_CPP[1]}-llama-quantize-release-O3-1"

#: The oracle build's options without its compiler flags (-O0 C++, -ffp-contract=off), with
#: cmake's stock Release optimisation for C and C++ stated explicitly.
_CMAKE_OPTIONS = (
    *(o for o in _ORACLE_OPTIONS if not o.startswith(("-DCMAKE_C_FLAGS", "-DCMAKE_CXX_FLAGS"))),
    "-DCMAKE_C_FLAGS_RELEASE=-O3 -DNDEBUG",
    "-DCMAKE_CXX_FLAGS_RELEASE=-O3 -DNDEBUG",
)


TOOL = cmake_build.LlamaTool(
    "llama-quantize",
    BUILD_TAG,
    _CMAKE_OPTIONS,
    _EXACT_SOURCES,
    "tools.reference.llama_quantize_o3",
    label="llama-quantize (-O3)",
)
build_dir = TOOL.build_dir


def binary(build: bool = True) -> Path:
    """The cached -O3 `llama-quantize` executable, built on first call (several minutes).

    Raises as `tools.reference.llama_quantize.binary` does.
    """
    return TOOL.binary(build)


def main() -> int:
    """Build (or find) the tool and print its path."""
    return cmake_build.print_built(binary)


if __name__ == "__main__":
    sys.exit(main())
