"""What the format tests read from formats/: the conformance makers and the tables of the
format documents."""

from __future__ import annotations

import importlib.util
import re
from pathlib import Path
from types import ModuleType

FORMATS = Path(__file__).resolve().parents[2] / "formats"
CONFORMANCE = FORMATS / "conformance"


def conformance_maker(fmt: str) -> ModuleType:
    """formats/conformance/make_<fmt>.py, loaded as a module."""
    name = f"make_{fmt}"
    spec = importlib.util.spec_from_file_location(name, CONFORMANCE / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def marked_table_rows(doc: Path, marker: str) -> list[list[str]]:
    """The cells of the markdown table between `<!-- marker: ... -->` and
    `<!-- end marker -->` in `doc`, without its heading and rule rows."""
    text = doc.read_text(encoding="utf-8")
    table = re.search(rf"<!-- {marker}:.*?-->\n(.*?)<!-- end {marker} -->", text, re.S)
    assert table, f"{marker} table markers missing"
    lines = table.group(1).strip().splitlines()[2:]
    return [[cell.strip() for cell in line.strip("|").split("|")] for line in lines]
