"""The report `bundler bench convert` prints."""

from __future__ import annotations

from typing import Any

from bundler.bench.convert import GIB, MIB
from bundler.cli.output import table


def _llama_quantize(section: dict[str, Any], threads: int) -> list[str]:
    rows = []
    for r in section["rows"]:
        for which, label in (("bundler", "bundler"), ("llama_quantize", "llama-quantize")):
            m = r[which]
            rows.append(
                [
                    f"{r['model']} ({r['source_bytes'] / MIB:.0f} MiB)"
                    if which == "bundler"
                    else "",
                    r["type"] if which == "bundler" else "",
                    label,
                    f"{m['seconds']:.2f} s",
                    f"{m['cpu_seconds']:.2f} s",
                    f"{m['peak_rss'] / MIB:.0f} MiB",
                    f"{m['output_bytes'] / MIB:.1f} MiB",
                    _verdict(r) if which == "bundler" else "",
                ]
            )
    head = ["float32 GGUF", "type", "tool", "wall", "CPU", "peak RSS", "output", "bundler"]
    return [
        f"float32 GGUF -> quantized GGUF beside llama-quantize ({section['binary']}), "
        f"{threads} thread(s) each, warm ({section['warm']}); best of the runs, peak RSS "
        "the highest seen (ru_maxrss of the child):",
        table(rows, head, "<<<>>>><"),
    ]


def _verdict(r: dict[str, Any]) -> str:
    g = r["goals"]
    same = "" if r["outputs"]["equal"] else "; OUTPUTS DIFFER: " + ", ".join(r["outputs"]["differ"])
    return (
        f"{r['speedup']:.2f}x {'ok' if g['seconds_met'] else 'SLOWER'}, "
        f"mem {r['memory_ratio']:.2f}x {'ok' if g['peak_rss_met'] else 'HIGHER'}{same}"
    )


def _gguf(r: dict[str, Any]) -> list[str]:
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
    return [
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


def human(r: dict[str, Any]) -> str:
    lines = []
    if "llama_quantize" in r:
        lines += _llama_quantize(r["llama_quantize"], r["threads"])
    if "gguf_package" in r:
        lines += [""] * bool(lines) + _gguf(r["gguf_package"])
    load = r["load_average"]
    lines.append(
        f"load average (1, 5, 15 min) at start {', '.join(f'{v:.2f}' for v in load['start'])}"
        + (f", at end {', '.join(f'{v:.2f}' for v in load['end'])}" if "end" in load else "")
        + f"; {r['cpus']} CPU(s)"
    )
    if r.get("kept"):
        lines.append(f"files kept in {r['directory']}")
    return "\n".join(lines)
