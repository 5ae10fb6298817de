"""llama.cpp's `llama-perplexity` as a reference, built from the llama-cpp-python sources.

`binary()` builds the tool once and caches it, exactly as `tools.reference.llama_imatrix`
builds llama-imatrix (the same options: CPU back-end built for this machine and optimised,
the rest at -O0), through `cmake_build.LlamaTool`.

`kl_divergence(original, quantized)` measures a quantized model's outputs against its
original's the way llama.cpp does: `llama-perplexity --kl-divergence-base FILE` runs the
original over the text in chunks of `CONTEXT` tokens and stores its token log-probabilities,
then `llama-perplexity --kl-divergence` runs the quantized model over the same tokens and
compares. Each chunk scores its second half (every token after the first half of the chunk
is predicted from at least half a context). The figures are those llama-perplexity prints:
mean and 99th-percentile KL divergence of the quantized model's token distributions from
the original's, how often both put the same token on top, and the perplexity of each.

The text is llama.cpp's `docs/build.md`, which ships in the same source distribution.

`python -m tools.reference.llama_perplexity` builds the tool and prints its path;
`python -m tools.reference.llama_perplexity ORIGINAL QUANTIZED...` prints each quantized
file's figures as JSON.
"""

from __future__ import annotations

import json
import os
import re
import sys
import tempfile
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path

from tools.reference import assets, cmake_build
from tools.reference.ggml_c import BuildFailed, NotBuilt, ToolchainMissing
from tools.reference.llama_imatrix import _CMAKE_OPTIONS

__all__ = [
    "BUILD_TAG",
    "BuildFailed",
    "KLDivergence",
    "NotBuilt",
    "ToolchainMissing",
    "base_logits",
    "binary",
    "compare",
    "kl_divergence",
    "run",
    "text",
]

#: Cache key of the build: the source version and llama-imatrix's build options.
BUILD_TAG = f"{assets.LLAMA_CPP[0]}-{assets.LLAMA_CPP[1]}-llama-perplexity-1"
TOOL = cmake_build.LlamaTool(
    "llama-perplexity", BUILD_TAG, _CMAKE_OPTIONS, (), "tools.reference.llama_perplexity"
)
build_dir = TOOL.build_dir
binary = TOOL.binary
run = TOOL.run

#: The text the models are compared on: llama.cpp's build instructions.
TEXT = Path("vendor") / "llama.cpp" / "docs" / "build.md"
#: Tokens per chunk (`-c`).
CONTEXT = 256


def text() -> Path:
    """The text models are compared on (from the source distribution)."""
    return assets.llama_cpp_sdist() / TEXT


@dataclass(frozen=True)
class KLDivergence:
    """What `llama-perplexity --kl-divergence` reports for one quantized model."""

    #: mean and 99th percentile of the per-token KL divergence (nats)
    mean_kl: float
    p99_kl: float
    #: fraction (0..1) of tokens where both models rank the same token first
    same_top: float
    #: perplexity of the quantized model and of the original on the scored tokens
    ppl: float
    ppl_base: float
    #: tokens scored (chunks x (CONTEXT - 1 - CONTEXT // 2))
    tokens: int
    chunks: int


_FIGURES = {
    "ppl": r"Mean PPL\(Q\)\s*:\s*([0-9.eE+-]+)",
    "ppl_base": r"Mean PPL\(base\)\s*:\s*([0-9.eE+-]+)",
    "mean_kl": r"Mean\s+KLD:\s*([0-9.eE+-]+)",
    "p99_kl": r"99\.0%\s+KLD:\s*([0-9.eE+-]+)",
    "same_top": r"Same top p:\s*([0-9.eE+-]+)",
}


def parse(output: str, context: int = CONTEXT) -> KLDivergence:
    """The figures of a `--kl-divergence` run's printed statistics."""
    match = re.search(r"kl_divergence: computing over (\d+) chunks", output)
    if match is None:
        raise RuntimeError(f"llama-perplexity did not say how many chunks:\n{output[-2000:]}")
    chunks = int(match.group(1))
    found = {}
    for key, pattern in _FIGURES.items():
        match = re.search(pattern, output)
        if match is None:
            raise RuntimeError(
                f"llama-perplexity printed no {key!r} ({pattern}):\n{output[-2000:]}"
            )
        found[key] = float(match.group(1))
    found["same_top"] /= 100.0
    return KLDivergence(**found, tokens=chunks * (context - 1 - context // 2), chunks=chunks)


def _threads() -> str:
    return str(min(2, os.cpu_count() or 1))


def base_logits(
    original: os.PathLike[str] | str,
    out: os.PathLike[str] | str,
    *,
    chunks: int | None = None,
    context: int = CONTEXT,
    text_file: os.PathLike[str] | str | None = None,
) -> int:
    """Run `original` over the text and store its log-probabilities in `out`
    (`--kl-divergence-base`); returns the number of chunks evaluated."""
    args = [
        "-m", str(original), "-f", str(text_file or text()), "-c", str(context),
        "-t", _threads(), "--kl-divergence-base", str(out),
    ]  # fmt: skip
    if chunks is not None:
        args += ["--chunks", str(chunks)]
    done = run(*args)
    match = re.search(r"calculating perplexity over (\d+) chunks", done.stderr + done.stdout)
    if match is None or not Path(out).exists():
        raise RuntimeError(f"llama-perplexity wrote no log-probabilities:\n{done.stderr[-2000:]}")
    return int(match.group(1))


def compare(
    base: os.PathLike[str] | str,
    quantized: os.PathLike[str] | str,
    context: int = CONTEXT,
) -> KLDivergence:
    """`quantized` against the log-probabilities in `base` (`--kl-divergence`)."""
    done = run(
        "-m", str(quantized), "--kl-divergence-base", str(base), "--kl-divergence",
        "-c", str(context), "-t", _threads(),
    )  # fmt: skip
    return parse(done.stdout + done.stderr, context)


@contextmanager
def base(
    original: os.PathLike[str] | str,
    *,
    chunks: int | None = None,
    context: int = CONTEXT,
    text_file: os.PathLike[str] | str | None = None,
) -> Iterator[tuple[Path, int]]:
    """The original's log-probabilities in a temporary file (deleted on exit) and the
    number of chunks, for comparing several quantized models with one run of the original."""
    with tempfile.TemporaryDirectory(prefix="kl-base-") as tmp:
        path = Path(tmp) / "base.kld"
        n = base_logits(original, path, chunks=chunks, context=context, text_file=text_file)
        yield path, n


def kl_divergence(
    original: os.PathLike[str] | str,
    quantized: Iterable[os.PathLike[str] | str],
    *,
    chunks: int | None = None,
    context: int = CONTEXT,
    text_file: os.PathLike[str] | str | None = None,
) -> list[KLDivergence]:
    """Each of `quantized` measured against `original` on the text (all of it, or `chunks`
    chunks of `context` tokens)."""
    with base(original, chunks=chunks, context=context, text_file=text_file) as (path, _):
        return [compare(path, q, context) for q in quantized]


def main(argv: list[str]) -> int:
    """Build (or find) the tool; with files, print each quantized file's figures."""
    status = cmake_build.print_built(binary)
    if status or not argv:
        return status
    if len(argv) < 2:
        print("usage: python -m tools.reference.llama_perplexity [ORIGINAL QUANTIZED...]")
        return 2
    results = kl_divergence(argv[0], argv[1:])
    print(json.dumps({q: asdict(r) for q, r in zip(argv[1:], results, strict=True)}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
