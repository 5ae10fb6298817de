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
