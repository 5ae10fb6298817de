"""`bundler validate`: structural rules, checksums and scales of a model file.

Exit codes: 0 valid, 4 not readable as a model (not a model file, truncated, a feature
bundler does not implement), 5 a rule failed, 3 no such file.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from typing import Any

from bundler.cli.agreement import add_text_flags
from bundler.cli.models import add_input_flags
from bundler.cli.output import add_json_flag, emit
from bundler.errors import EXIT_INVALID_FORMAT, EXIT_OK, EXIT_VALIDATION

#: Scans of fewer bytes than this show no progress bar.
PROGRESS_MIN_BYTES = 64 << 20


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "validate", help="check a model file's structure, checksums and scales (exit 5: invalid)"
    )
    p.add_argument("file", help="GGUF (or a shard of a split set), SafeTensors, index, APR or ONNX")
    p.add_argument(
        "quantized", nargs="?",
        help="a quantized version of FILE to compare with it: with --text, both models run "
        "over the text (GGUF in llama.cpp, ONNX in ONNX Runtime with --tokenizer); ONNX without "
        "--text: structure, weights, sizes, both run in ONNX Runtime on generated inputs (exit "
        "5 when --threshold fails)",
    )  # fmt: skip
    add_text_flags(p)
    p.add_argument("--detailed", action="store_true", help="two ONNX files: per-weight analysis")
    add_input_flags(p, "two ONNX files: ", "small")
    p.add_argument(
        "--threshold", type=float, default=None,
        help="with --text: the largest mean KL divergence that passes (exit 5 over it); two "
        "ONNX files: least cosine similarity of every output (default 0.99)",
    )  # fmt: skip
    p.add_argument(
        "--samples", type=int, default=4, help="two ONNX files: generated input sets to run"
    )
    p.add_argument("--seed", type=int, default=0, help="two ONNX files: seed of the inputs")
    p.add_argument(
        "--strict",
        action="store_true",
        help="also flag what llama.cpp, aprender or the reference SafeTensors reader refuse",
    )
    add_json_flag(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from bundler.validate import validate

    if args.text is not None or args.ctx or args.chunks or args.threads or args.tokenizer:
        from bundler.cli.agreement import run_validate_text

        return run_validate_text(args)
    if args.quantized is not None:
        from bundler.cli.models import run_validate_pair

        return run_validate_pair(args)

    bars: list[Any] = []
    try:
        report = validate(args.file, strict=args.strict, progress=lambda b: _bar(b, bars))
    finally:
        for bar in bars:
            bar.close()
    emit(args, report.as_dict(), human)
    if not report.parsed:  # said once, on stderr (the human report leaves it out)
        for error in report.errors:
            print(f"bundler: error: {error.place()}: {error.message}", file=sys.stderr)
        return EXIT_INVALID_FORMAT
    return EXIT_OK if report.valid else EXIT_VALIDATION


def _bar(bundle, bars: list[Any]) -> Callable[[int], None] | None:
    """A progress bar for the scale scan: on a terminal only, for large files only."""
    from bundler.validate import scan_bytes

    total = scan_bytes(bundle)
    if total < PROGRESS_MIN_BYTES or not sys.stderr.isatty():
        return None
    from tqdm import tqdm

    bar = tqdm(
        total=total, unit="B", unit_scale=True, unit_divisor=1024,
        file=sys.stderr, leave=False, desc="scanning scales",
    )  # fmt: skip
    bars.append(bar)
    return bar.update


def human(report: dict[str, Any]) -> str:
    from bundler.validate import Problem

    lines = []
    for label, items in (("error", report["errors"]), ("warning", report["warnings"])):
        if label == "error" and not report["parsed"]:
            continue  # the command prints it on stderr
        for item in items:
            p = Problem(**item)
            place = p.place()
            lines.append(f"{label}: {place + ': ' if place else ''}{p.message} [{p.rule}]")
    if not report["parsed"]:
        verdict = "cannot be read as a model"
    elif report["valid"]:
        verdict = "valid"
    else:
        verdict = f"INVALID ({len(report['errors'])} error(s))"
    strict = ", strict" if report["strict"] else ""
    lines.append(
        f"{report['path']}: {report['format'] or 'unknown format'}{strict}: {verdict}; "
        f"{report['tensors']:,} tensors, scales of {report['scanned_tensors']:,} scanned "
        f"({report['scanned_bytes']:,} bytes), {len(report['warnings'])} warning(s)"
    )
    return "\n".join(lines)
