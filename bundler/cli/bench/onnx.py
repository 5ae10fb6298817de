"""The report `bundler bench onnx` prints."""

from __future__ import annotations

from typing import Any

from bundler.cli.output import table


def human(result: dict[str, Any]) -> str:
    body = []
    for r in result["rows"]:
        if "error" in r:
            body.append([r["model"], r["quantizer"], "-", "-", "-", "-", "-", "-",
                         r["error"][:60]])  # fmt: skip
            continue
        body.append([
            r["model"], r["quantizer"],
            f"{r['seconds'] * 1000:.0f} ms" if "seconds" in r else "-",
            f"{r['cpu_seconds'] * 1000:.0f} ms" if "cpu_seconds" in r else "-",
            f"{r['cosine']:.6f}" if "cosine" in r else "-",
            f"{r['top1']:.3f}" if r.get("top1") is not None else "-",
            f"{r['latency_seconds'] * 1000:.3f} ms",
            f"{r['file_bytes'] / (1 << 20):.2f} MiB", "",
        ])  # fmt: skip
    head = ["model", "quantizer", "quantize", "CPU", "cosine", "top-1", "latency", "size", ""]
    load = ", ".join(f"{v:.2f}" for v in result["load_average"])
    lines = [
        f"quantize: medians of {result['repeat']} interleaved rounds, wall and CPU time (all "
        f"threads); load average {load}",
        table(body, head, "<<>>>>>><"),
    ]
    for s in result["speedups"]:
        cpu = "-" if s["speedup_cpu"] is None else f"{s['speedup_cpu']:.1f}x"
        lines.append(
            f"{s['model']} {s['bits']}: bundler {cpu} faster than ORT in CPU time "
            f"({s['speedup']:.1f}x in wall time; target {s['target']:.0f}x); agreement "
            f"{'no worse' if s['cosine_no_worse'] else 'WORSE'}"
        )
    for s in result["skipped"]:
        lines.append(f"skipped {s['name']}: {s['skipped']}")
    return "\n".join(lines)
