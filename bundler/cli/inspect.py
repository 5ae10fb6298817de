"""`bundler inspect`: a model file's container facts, metadata and tensor table."""

from __future__ import annotations

import argparse
from typing import Any

from bundler.cli.output import add_json_flag, emit, table

#: Characters of a string value shown in the human output unless --full.
TEXT_WIDTH = 60


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("inspect", help="show a model file's metadata and tensor table")
    p.add_argument("file", help="GGUF (or a shard of a split set), SafeTensors, index, or APR")
    p.add_argument("--full", action="store_true", help="show arrays and long strings in full")
    add_json_flag(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from bundler.inspection import describe

    report = describe(args.file, full=args.full)
    emit(args, report, lambda r: human(r, args.full))
    return 0


def human(report: dict[str, Any], full: bool = False) -> str:
    from bundler.inspection import headline

    c = report["container"]
    lines = [f"{report['path']}: {headline(c)}"]
    if len(c["files"]) > 1:
        lines += [f"  {p}" for p in c["files"]]
    lines += c.get("notes", [])
    md = report["metadata"]
    lines += ["", f"metadata ({len(md)} keys)"]
    if md:
        rows = [[k, _type(v), _value(v, full)] for k, v in md.items()]
        lines.append(table(rows, ["key", "type", "value"]))
    tensors = report["tensors"]
    lines += ["", f"tensors ({len(tensors)})"]
    if tensors:
        rows = [
            [
                t["index"],
                t["name"],
                "x".join(map(str, t["shape"])) or "scalar",
                t["codec"],
                f"{t['bytes']:,}",
                "-" if t["bits_per_weight"] is None else f"{t['bits_per_weight']:.4g}",
            ]
            for t in tensors
        ]
        lines.append(table(rows, ["#", "name", "shape", "codec", "bytes", "bpw"], "><<<>>"))
    tot = report["totals"]
    lines += [
        "",
        f"totals: {tot['tensors']:,} tensors, {tot['parameters']:,} parameters, "
        f"{tot['bytes']:,} bytes of tensor data",
    ]
    rows = [
        [codec, f"{r['tensors']:,}", f"{r['parameters']:,}", f"{r['bytes']:,}"]
        for codec, r in tot["by_codec"].items()
    ]
    if rows:
        lines.append(table(rows, ["codec", "tensors", "parameters", "bytes"], "<>>>"))
    return "\n".join(lines)


def _type(v: dict[str, Any]) -> str:
    if v["type"] == "ARRAY":
        return f"ARRAY[{v['item_type']}] x {v['count']:,}"
    return v["type"]


def _value(v: dict[str, Any], full: bool) -> str:
    if v["type"] == "ARRAY":
        items = ", ".join(_text(x, full) for x in v["value"])
        return f"[{items}{', ...' if v['truncated'] else ''}]"
    return _text(v["value"], full)


def _text(x: Any, full: bool) -> str:
    text = repr(x) if isinstance(x, str) else str(x)
    if not full and len(text) > TEXT_WIDTH:
        text = text[: TEXT_WIDTH - 3] + "..."
    return text.replace("\n", "\\n")
