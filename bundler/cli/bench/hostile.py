"""The report `bundler bench hostile` prints."""

from __future__ import annotations

from typing import Any

from bundler.bench.hostile import MIB
from bundler.cli.output import table


def human(r: dict[str, Any]) -> str:
    cells = [
        [
            c["case"], f"{c['count']:,}", f"{c['file_bytes'] / MIB:.1f}",
            f"{c.get('seconds', float('nan')):.2f}",
            f"{c.get('peak_bytes', 0) / MIB:.0f}",
            f"{c.get('rss_growth_bytes', 0) / MIB:.0f}",
            f"{c.get('peak_mib_per_mib', float('nan')):.1f}",
            f"{c.get('rss_mib_per_mib', float('nan')):.1f}", c["outcome"],
        ]
        for c in r["cases"]
    ]  # fmt: skip
    head = ["case", "count", "MiB", "seconds", "peak MiB", "RSS+ MiB", "peak/MiB", "RSS+/MiB",
            "outcome"]  # fmt: skip
    return table(cells, head, "<>>>>>>><")
