"""`bundler imatrix MODEL --text FILE -o OUT.gguf`: measure an importance matrix by running
the model in llama.cpp over a text (bundler.importance.measure), written as llama-imatrix's
GGUF matrix; and the `--text` options `quantize` shares."""

from __future__ import annotations

import argparse
import os
from typing import Any

from bundler.cli.output import emit, positive_int


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "imatrix",
        help="measure an importance matrix: run a GGUF model over a text in llama.cpp "
        "(needs bundler[llama]) and write llama-imatrix's GGUF matrix",
    )
    p.add_argument("model", help="a GGUF model llama.cpp runs")
    p.add_argument("--text", required=True, metavar="FILE", help="the calibration text")
    p.add_argument("-o", "--output", required=True, help="the matrix to write (GGUF)")
    add_measure_flags(p, "")
    p.add_argument(
        "--process-output", action="store_true",
        help="measure output.weight too (as llama-imatrix --process-output)",
    )  # fmt: skip
    p.add_argument("--force", action="store_true", help="overwrite an existing output")
    p.add_argument("--json", action="store_true", help="print one JSON report")
    p.add_argument("-q", "--quiet", action="store_true", help="print only errors")
    p.set_defaults(func=run)


def add_measure_flags(
    p: argparse.ArgumentParser, prefix: str = "with --text: ", threads: bool = True
) -> None:
    """--ctx, --chunks and (with `threads`) --llama-threads: how the text is run."""
    from bundler.importance.measure import DEFAULT_CONTEXT

    p.add_argument(
        "--ctx", type=positive_int, metavar="N",
        help=f"{prefix}tokens per chunk (default {DEFAULT_CONTEXT}, as llama-imatrix)",
    )  # fmt: skip
    p.add_argument(
        "--chunks", type=positive_int, metavar="N",
        help=f"{prefix}run only the first N chunks (default: every whole chunk)",
    )  # fmt: skip
    if not threads:
        return
    p.add_argument(
        "--llama-threads", type=positive_int, metavar="N",
        help=f"{prefix}llama.cpp's threads (default: all cores)",
    )  # fmt: skip


def measured(args: argparse.Namespace, model: str, process_output: bool = False) -> Any:
    """The activations of `model` over `args.text`, a progress bar over the chunks on a
    terminal."""
    from bundler.cli.agreement import chunk_bar
    from bundler.importance.measure import DEFAULT_CONTEXT, measure

    bars: list[Any] = []
    try:
        return measure(
            model, args.text, context=args.ctx or DEFAULT_CONTEXT, chunks=args.chunks,
            threads=args.llama_threads or os.cpu_count(), process_output=process_output,
            progress=lambda total: chunk_bar(total, bars, "measuring activations"),
        )  # fmt: skip
    finally:
        for bar in bars:
            bar.close()


def run(args: argparse.Namespace) -> int:
    from bundler.errors import OutputExistsError
    from bundler.importance import gguf_writer

    if not args.force and os.path.exists(args.output):
        raise OutputExistsError(args.output)
    found = measured(args, args.model, args.process_output)
    gguf_writer.write(found, args.output, force=args.force)
    report = {
        "model": args.model,
        "text": args.text,
        "output": args.output,
        "context": found.context,
        "chunks": found.chunks,
        "tokens": found.tokens,
        "entries": len(found.sums),
    }
    if not args.quiet or args.json:
        emit(args, report, _human)
    return 0


def _human(r: dict[str, Any]) -> str:
    return (
        f"{r['output']}: {r['entries']} weights measured over {r['chunks']} chunks of "
        f"{r['context']} tokens ({r['tokens']:,} tokens of {r['text']})"
    )
