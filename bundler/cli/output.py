"""How commands report: human text on stdout, or `--json` with sorted keys."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable
from typing import Any

from bundler.texttable import table

__all__ = ["add_json_flag", "emit", "table"]


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


def positive_int(text: str) -> int:
    """An argparse type: a whole number of at least 1 (a usage error otherwise)."""
    import argparse

    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"{value} is less than 1")
    return value


def positive_ints(text: str) -> str:
    """An argparse type: comma-separated whole numbers of at least 1, kept as given."""
    for part in text.split(","):
        positive_int(part.strip())
    return text
