"""`bundler validate ORIGINAL QUANTIZED --text FILE`: both models run over a text in their
own runtime (bundler.agreement); output formatting and the --threshold gate only."""

from __future__ import annotations

import argparse
import sys
from typing import Any

from bundler.cli.output import emit, positive_int, table
from bundler.errors import EXIT_OK, EXIT_VALIDATION, UsageError

_TEXT_HELP = (
    "run both models over this text (GGUF in llama.cpp, needs bundler[llama]; ONNX in ONNX "
    "Runtime, with --tokenizer): perplexity of each, KL divergence and top-1 agreement of the "
    "next-token distributions"
)
_TOKENIZER_HELP = (
    "with --text on ONNX models: the GGUF file whose vocabulary tokenizes the text (the one "
    "the model was exported from; needs bundler[llama])"
)
#: --text's numeric options and what they set.
_TEXT_FLAGS = (
    ("--ctx", "tokens per chunk (default 512, as llama-perplexity)"),
    ("--chunks", "score only the first N chunks (default: every whole chunk)"),
    ("--threads", "llama.cpp's threads (default: its own)"),
)

#: Options of the ONNX comparison on generated inputs, which --text does not use.
_GENERATED_INPUT_OPTIONS = ("detailed", "input_shape", "input_value", "strict")


def add_text_flags(parser: argparse.ArgumentParser) -> None:
    """`validate`'s --text and the options that go with it."""
    parser.add_argument("--text", metavar="FILE", help=_TEXT_HELP)
    parser.add_argument("--tokenizer", metavar="FILE", help=_TOKENIZER_HELP)
    for flag, what in _TEXT_FLAGS:
        parser.add_argument(flag, type=positive_int, metavar="N", help=f"with --text: {what}")


def run_validate_text(args: argparse.Namespace) -> int:
    from bundler.agreement import DEFAULT_CONTEXT, compare_text

    if args.text is None:
        raise UsageError("--ctx, --chunks, --threads and --tokenizer go with --text")
    if args.quantized is None:
        raise UsageError(
            "--text compares two models: bundler validate ORIGINAL QUANTIZED --text FILE"
        )
    given = [f"--{o.replace('_', '-')}" for o in _GENERATED_INPUT_OPTIONS if getattr(args, o)]
    if args.samples != 4 or args.seed != 0:
        given.append("--samples/--seed")
    if given:
        raise UsageError(f"{', '.join(given)} do(es) not apply with --text")
    bars: list[Any] = []
    try:
        result = compare_text(
            args.file, args.quantized, args.text, context=args.ctx or DEFAULT_CONTEXT,
            chunks=args.chunks, threads=args.threads, threshold=args.threshold,
            progress=lambda total: chunk_bar(total, bars), tokenizer=args.tokenizer,
        )  # fmt: skip
    finally:
        for bar in bars:
            bar.close()
    emit(args, result.as_dict(), human)
    return EXIT_OK if result.passed else EXIT_VALIDATION


def chunk_bar(total: int, bars: list[Any], desc: str = "running both models") -> Any:
    """A progress bar over the chunks, on a terminal only."""
    if not sys.stderr.isatty():
        return None
    from tqdm import tqdm

    bar = tqdm(total=total, unit="chunk", file=sys.stderr, leave=False, desc=desc)
    bars.append(bar)
    return bar.update


def human(r: dict[str, Any]) -> str:
    pct = r["kl_divergence_percentiles"]
    lines = [
        f"{r['original']} vs {r['quantized']} over {r['text']}",
        f"{r['runtime']}: {r['chunks']:,} of {r['chunks_available']:,} chunks of "
        f"{r['context']:,} tokens ({r['text_tokens']:,} in the text), "
        f"{r['scored_tokens']:,} tokens scored",
        "",
        table(
            [
                ["bytes", f"{r['original_bytes']:,}", f"{r['quantized_bytes']:,}"],
                [
                    "perplexity",
                    f"{r['perplexity_original']:.4f}",
                    f"{r['perplexity_quantized']:.4f}",
                ],
            ],
            ["", "original", "quantized"],
            "<>>",
        ),
        "",
        f"KL divergence: mean {r['kl_divergence_mean']:.6f}, median {pct['p50']:.6f}, "
        f"99% {r['kl_divergence_p99']:.6f}, max {r['kl_divergence_max']:.6f}",
        f"top-1 agreement: {100 * r['top1_agreement']:.3f} %",
        f"RMS change of the next token's probability: {100 * r['delta_p_rms']:.3f} %",
    ]
    if r["threshold"] is not None:
        verdict = "PASSED" if r["passed"] else "FAILED"
        sign = "<=" if r["passed"] else ">"
        lines.append(
            f"{verdict} (mean KL divergence {r['kl_divergence_mean']:.6f} {sign} "
            f"threshold {r['threshold']:g})"
        )
    return "\n".join(lines)
