"""The tables `bundler bench containers` prints."""

from __future__ import annotations

from typing import Any

from bundler.bench.containers import GIB
from bundler.cli.output import table


def human(result: dict[str, Any]) -> str:
    o = result["open"]
    lines = [
        f"open + list {o['file']} ({o['items']} metadata keys and tensors), median:",
        table(
            [
                ["bundler", f"{o['bundler_seconds'] * 1e3:.1f} ms", f"{o['speedup']:.0f}x"],
                ["gguf.GGUFReader", f"{o['gguf_seconds'] * 1e3:.1f} ms", "1x"],
            ],
            ["reader", "time", "speed"],
            "<>>",
        ),
        "",
        "rewrite a generated GGUF (fresh process each; extra memory over the imports):",
    ]
    rows = []
    for r in result["rewrite"]:
        for which in ("bundler", "gguf"):
            if which not in r:
                continue
            m = r[which]
            rows.append(
                [
                    f"{r['bytes'] / GIB:.2f} GiB",
                    which,
                    f"{m['seconds']:.2f} s",
                    f"{r['bytes'] / m['seconds'] / 1e6:.0f} MB/s",
                    f"{m['tracemalloc_peak'] / 2**20:.1f} MiB",
                    f"{m['rss_growth'] / 2**20:.1f} MiB",
                ]
            )
    lines.append(
        table(
            rows,
            ["file", "writer", "time", "speed", "tracemalloc peak", "RSS growth"],
            "<<>>>>",
        )
    )
    return "\n".join(lines)
