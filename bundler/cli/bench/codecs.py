"""The table `bundler bench codecs` prints."""

from __future__ import annotations

from typing import Any

from bundler.bench.measure import MIB
from bundler.cli.output import table


def _fmt(v: float | None, spec: str = ".0f") -> str:
    return "-" if v is None else format(v, spec)


def _exact(row: dict[str, Any]) -> str:
    marks = [row.get("gguf_exact"), row.get("c_exact")]
    known = [m for m in marks if m is not None]
    return "-" if not known else ("yes" if all(known) else "NO")


def human(report: dict[str, Any]) -> str:
    body = [
        [
            r["codec"] + (" +imatrix" if r.get("weighted") else ""),
            r["threads"],
            _fmt(r["ours_encode_mib_s"]),
            _fmt(r["gguf_encode_mib_s"]),
            _fmt(r["ratio_encode_vs_gguf"], ".1f"),
            _fmt(r["c_encode_mib_s"]),
            _fmt(r["ratio_encode_vs_c"], ".2f"),
            _fmt(r["ours_decode_mib_s"]),
            _fmt(r["gguf_decode_mib_s"]),
            _fmt(r["ratio_decode_vs_gguf"], ".1f"),
            _fmt(r["c_decode_mib_s"]),
            _fmt(r["ratio_decode_vs_c"], ".2f"),
            _fmt(r["ours_encode_extra_bytes"] / MIB, ".1f"),
            _fmt(
                None
                if r["gguf_encode_extra_bytes"] is None
                else r["gguf_encode_extra_bytes"] / MIB,
                ".1f",
            ),
            _exact(r),
        ]
        for r in report["results"]
    ]
    head = [
        "codec",
        "thr",
        "enc",
        "gguf",
        "x",
        "C",
        "x",
        "dec",
        "gguf",
        "x",
        "C",
        "x",
        "extra MiB",
        "gguf extra",
        "exact",
    ]
    inp = report["input"]
    title = (
        f"{inp['rows']}x{inp['cols']} float32 (std {inp['std']}, seed {inp['seed']}), "
        f"MiB/s of float32, medians; extra = memory allocated beyond the output"
    )
    return title + "\n" + table(body, head, "<>" + ">" * 12 + "<")
