"""The report `bundler bench convert` prints."""

from __future__ import annotations

from typing import Any

from bundler.bench.convert import GIB, MIB
from bundler.cli.output import table


def human(r: dict[str, Any]) -> str:
    rows = []
    for which, label in (("bundler", "bundler quantize"), ("gguf", "safetensors + gguf")):
        m = r[which]
        rows.append(
            [
                label,
                f"{m['seconds']:.2f} s",
                f"{m['cpu_seconds']:.2f} s",
                f"{m['mib_per_s']:.0f} MiB/s",
                f"{m['peak_rss'] / MIB:.0f} MiB",
                f"{m['output_bytes'] / MIB:.1f} MiB",
            ]
        )
    t = r["targets"]
    out = r["outputs"]
    lines = [
        f"float32 SafeTensors ({r['source_bytes'] / GIB:.2f} GiB) -> Q4_0 GGUF, "
        "each in a fresh process (start-up included):",
        table(rows, ["converter", "time", "CPU", "throughput", "peak RSS", "output"], "<>>>>>"),
        "",
        f"bundler pipeline alone: {r['bundler']['pipeline_seconds']:.2f} s "
        f"({r['source_bytes'] / MIB / r['bundler']['pipeline_seconds']:.0f} MiB/s)",
        f"speed-up {r['speedup']:.1f}x (target {t['speedup']:.0f}x: "
        f"{'met' if t['speedup_met'] else 'MISSED'}); peak memory {r['memory_ratio']:.1f}x "
        f"smaller (target under {t['peak_rss'] / MIB:.0f} MiB: "
        f"{'met' if t['peak_rss_met'] else 'MISSED'})",
        f"outputs: {out['tensors']} tensors, "
        + ("byte-identical" if out["equal"] else f"DIFFER: {', '.join(out['differ'])}"),
    ]
    if r.get("kept"):
        lines.append(f"files kept in {r['directory']}")
    return "\n".join(lines)
