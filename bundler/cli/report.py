"""`bundler report`: one self-contained HTML page comparing quantized files with the original."""

from __future__ import annotations

import argparse
import sys
from typing import Any

from bundler.cli.output import add_json_flag, emit, table


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "report", help="an HTML page (figures inlined) comparing quantized files with the original"
    )
    p.add_argument("original", help="the original model file (any format)")
    p.add_argument("quantized", nargs="+", help="quantized versions of it (any formats)")
    p.add_argument("-o", "--output", required=True, help="the HTML file to write")
    p.add_argument("--force", action="store_true", help="overwrite an existing output")
    add_json_flag(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from bundler.plot import require
    from bundler.report import write_report

    require()
    bar = None
    if not args.json and sys.stderr.isatty():
        from tqdm import tqdm

        bar = tqdm(total=len(args.quantized), file=sys.stderr, leave=False, desc="comparing")

    def progress(path: str) -> None:
        if bar is not None:
            bar.set_postfix_str(path, refresh=False)
            bar.update(1)

    try:
        data = write_report(args.original, args.quantized, args.output, args.force, progress)
    finally:
        if bar is not None:
            bar.close()
    emit(args, data, human)
    return 0


def human(data: dict[str, Any]) -> str:
    rows = [
        [
            r["label"],
            f"{r['bytes']:,}",
            "-" if r["bits_per_weight"] is None else f"{r['bits_per_weight']:.3f}",
            f"{r['squared_error']:.6g}",
            f"{r['relative_error']:.3e}",
        ]
        for r in data["candidates"]
    ]
    lines = [table(rows, ["file", "bytes", "bits/weight", "squared error", "relative"], "<>>>>")]
    lines.append(f"wrote {data['output']}")
    return "\n".join(lines)
