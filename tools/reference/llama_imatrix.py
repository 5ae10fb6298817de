"""llama.cpp's `llama-imatrix` tool as a reference, built from the llama-cpp-python sources.

`binary()` builds the tool once (cmake, target `llama-imatrix`, and `llama-perplexity` of
the same options in the same run when it is not cached yet; CPU backend, no GPU,
BLAS or network code) from the source distribution `assets.llama_cpp_sdist()` unpacks, and
caches the statically linked executable under `assets.cache_dir()` keyed by that version.

Unlike llama-quantize, llama-imatrix runs the model, so its CPU back-end is built for this
machine (GGML_NATIVE) and optimised; the rest of the C++ stays at -O0 to keep the build
short. The matrix it computes is data for both quantizers, never compared with another
computation, so nothing here needs to be bit-reproducible elsewhere.

`smollm2_matrix()` computes (once, cached) a real importance matrix for SmolLM2-135M on
llama.cpp's own README, which ships in that source distribution, in both file formats.

`python -m tools.reference.llama_imatrix` builds the tool and the matrices and prints
their paths.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from tools.reference import assets, cmake_build, llama_quantize
from tools.reference.ggml_c import BuildFailed, NotBuilt, ToolchainMissing

__all__ = [
    "BUILD_TAG",
    "BuildFailed",
    "NotBuilt",
    "ToolchainMissing",
    "binary",
    "calibration_text",
    "run",
    "smollm2_matrix",
]

#: Cache key of the build: the source version and the flags below.
BUILD_TAG = f"{assets.LLAMA_CPP[0]}-{assets.LLAMA_CPP[1]}-llama-imatrix-1"

#: llama-quantize's options (static Release, no GPU/BLAS/network, C++ at -O0) with the CPU
#: back-end built for this machine, and a compiler launcher that compiles the back-end's
#: C++ files (its matrix products, vector kernels and operators) at -O2.
_LAUNCHER = f"{sys.executable};{Path(__file__).with_name('optimise_cpu.py')}"
_CMAKE_OPTIONS = (
    *("-DGGML_NATIVE=ON" if o == "-DGGML_NATIVE=OFF" else o for o in llama_quantize._CMAKE_OPTIONS),
    f"-DCMAKE_CXX_COMPILER_LAUNCHER={_LAUNCHER}",
)

#: The calibration text: llama.cpp's README, shipped in the source distribution.
CALIBRATION = Path("vendor") / "llama.cpp" / "README.md"
#: Context size and chunks of the cached matrix: 4 chunks of 128 tokens.
CONTEXT, CHUNKS = 128, 4


def _companions() -> tuple[cmake_build.LlamaTool, ...]:
    """llama-perplexity, built with these options too: in the same cmake run."""
    from tools.reference import llama_perplexity  # imports this module's options

    return (llama_perplexity.TOOL,)


TOOL = cmake_build.LlamaTool(
    "llama-imatrix", BUILD_TAG, _CMAKE_OPTIONS, (), "tools.reference.llama_imatrix",
    companions=_companions,
)  # fmt: skip
build_dir = TOOL.build_dir


def binary(build: bool = True) -> Path:
    """The cached `llama-imatrix` executable, built on first call (errors as
    `llama_quantize.binary`)."""
    return TOOL.binary(build)


def calibration_text() -> Path:
    """The text the cached matrices are computed on."""
    return assets.llama_cpp_sdist() / CALIBRATION


#: Run `llama-imatrix args...`; raises on a non-zero exit.
run = TOOL.run


def smollm2_matrix(fmt: str = "gguf") -> Path:
    """A real importance matrix of SmolLM2-135M (its Q4_1 file) over `calibration_text()`,
    `CHUNKS` chunks of `CONTEXT` tokens, in llama-imatrix's `fmt` ("gguf" or "dat"); computed
    once and cached."""
    if fmt not in ("gguf", "dat"):
        raise ValueError(f"fmt must be 'gguf' or 'dat', not {fmt!r}")
    target = build_dir() / f"smollm2-135m-readme-c{CONTEXT}x{CHUNKS}.imatrix.{fmt}"
    if target.exists():
        return target
    exe = binary()
    with open(target.parent / ".lock", "w") as lock:
        import fcntl

        fcntl.flock(lock, fcntl.LOCK_EX)
        if target.exists():
            return target
        with tempfile.TemporaryDirectory(dir=target.parent) as tmp:
            out = Path(tmp) / target.name
            threads = str(min(2, os.cpu_count() or 1))
            cmd = [
                str(exe), "-m", str(assets.smollm2_gguf()), "-f", str(calibration_text()),
                "-o", str(out), "--output-format", fmt, "-c", str(CONTEXT),
                "--chunks", str(CHUNKS), "-t", threads, "--no-ppl",
            ]  # fmt: skip
            done = subprocess.run(cmd, capture_output=True, text=True)
            if done.returncode or not out.exists():
                raise RuntimeError(
                    f"{' '.join(cmd)} exited {done.returncode}:\n{done.stderr[-3000:]}"
                )
            shutil.copyfile(out, target.with_name(target.name + ".part"))
            os.replace(target.with_name(target.name + ".part"), target)
    return target


def main() -> int:
    """Build (or find) the tool and the SmolLM2 matrices and print their paths."""
    status = cmake_build.print_built(binary)
    if status:
        return status
    for fmt in ("gguf", "dat"):
        status = cmake_build.print_built(lambda f=fmt: smollm2_matrix(f))
        if status:
            return status
    return 0


if __name__ == "__main__":
    sys.exit(main())
