"""Plain text tables: what the CLI prints and what recipes put in their reports."""

from __future__ import annotations

from typing import Any


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
