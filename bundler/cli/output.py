"""How commands report: human text on stdout, or `--json` with sorted keys."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable
from typing import Any


def add_json_flag(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--json", action="store_true", help="print machine-readable JSON")


def emit(args: argparse.Namespace, data: Any, human: Callable[[Any], str]) -> None:
    """Print `data` as sorted-key JSON with --json, else as `human(data)`."""
    if getattr(args, "json", False):
        json.dump(data, sys.stdout, sort_keys=True, indent=2, default=_default)
        sys.stdout.write("\n")
    else:
        text = human(data)
        sys.stdout.write(text if text.endswith("\n") else text + "\n")


def _default(value: Any) -> Any:
    if hasattr(value, "tolist"):
        return value.tolist()
    raise TypeError(f"cannot serialize {type(value).__name__}")


def table(rows: list[list[Any]], header: list[str], align: str | None = None) -> str:
    """A plain text table; `align` has one of '<' or '>' per column."""
    cells = [header] + [[str(c) for c in r] for r in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(header))]
    align = align or "<" * len(header)
    lines = [
        "  ".join(f"{c:{a}{w}}" for c, a, w in zip(r, align, widths, strict=True)) for r in cells
    ]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(line.rstrip() for line in lines)
