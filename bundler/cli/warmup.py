"""`bundler warmup`: compile the codec kernels ahead of their first use."""

from __future__ import annotations

import argparse
from typing import Any

from bundler.cli.output import add_json_flag, emit, table


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "warmup",
        help="compile the codec kernels now (for images and CI), not on first use",
        description="Compile the kernels of the block codecs and of the affine, vector, "
        "statistics, float-conversion and GGUF string families, or load them from the "
        "compiler's cache, so that no later conversion waits for the compiler.",
    )
    p.add_argument(
        "--codecs",
        default=None,
        help="comma-separated codec or family names (affine, vectors, stats, floats, gguf); "
        "default: every block codec bundler encodes and every family",
    )
    add_json_flag(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from bundler.codecs.warmup import warmup

    names = [n.strip() for n in args.codecs.split(",") if n.strip()] if args.codecs else None
    emit(args, warmup(names), _human)
    return 0


def _human(report: dict[str, Any]) -> str:
    rows = [
        [r["codec"], r["compiled_functions"] or "cached", f"{r['seconds']:.2f}"]
        for r in report["codecs"]
    ]
    lines = [table(rows, ["codec", "compiled", "seconds"], "<>>")]
    lines.append(
        f"{len(rows)} codec(s) ready in {report['seconds']:.1f} s; "
        f"{report['compiled_functions']} function(s) compiled"
    )
    for path in report["cache_dirs"]:
        lines.append(f"cache: {path}")
    return "\n".join(lines)
