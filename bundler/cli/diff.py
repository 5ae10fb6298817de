"""`bundler diff`: per-tensor error figures between two model files of any formats."""

from __future__ import annotations

import argparse
from typing import Any

from bundler.cli.output import add_json_flag, emit, table

#: Tensor names shown in the threshold error message.
NAMED = 10


def _cosine(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not -1.0 <= value <= 1.0:
        raise argparse.ArgumentTypeError(f"a cosine lies in [-1, 1], got {text}")
    return value


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("diff", help="per-tensor RMSE, cosine and max error between two models")
    p.add_argument("a", help="the reference model file (any format)")
    p.add_argument("b", help="the model file compared with it (any format)")
    p.add_argument(
        "--threshold", type=_cosine, metavar="MIN_COSINE",
        help="exit 5 when a common tensor's cosine similarity is below MIN_COSINE",
    )  # fmt: skip
    add_json_flag(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from bundler.diff import diff
    from bundler.errors import ValidationError

    report = diff(args.a, args.b, args.threshold)
    emit(args, report, human)
    below = report["below_threshold"]
    if below:
        names = ", ".join(below[:NAMED]) + (
            f" and {len(below) - NAMED} more" if len(below) > NAMED else ""
        )
        raise ValidationError(
            f"{len(below)} tensor(s) have a cosine similarity below {args.threshold}: {names}"
        )
    return 0


def _num(x: float | None, spec: str) -> str:
    return "-" if x is None else format(x, spec)


def human(r: dict[str, Any]) -> str:
    lines = [f"A: {r['a']} ({r['format_a']})", f"B: {r['b']} ({r['format_b']})", ""]
    below = set(r["below_threshold"])
    rows = [
        [
            t["name"],
            "x".join(map(str, t["shape"])),
            t["codec_a"] if t["codec_a"] == t["codec_b"] else f"{t['codec_a']} -> {t['codec_b']}",
            _num(t["rmse"], ".4e"),
            _num(t["max_abs"], ".4e"),
            _num(t["cosine"], ".6f") + (" <" if t["name"] in below else ""),
        ]
        for t in r["tensors"]
    ]
    if rows:
        lines.append(table(rows, ["name", "shape", "codec", "rmse", "max_abs", "cosine"], "<<<>>>"))
    for t in r["tensors"]:
        if t["error"]:
            lines.append(f"not compared: {t['name']}: {t['error']}")
    for key, label in (("only_in_a", "only in A"), ("only_in_b", "only in B")):
        if r[key]:
            lines.append(f"{len(r[key])} tensor(s) {label}: {', '.join(r[key])}")
    for m in r["shape_mismatches"]:
        lines.append(f"shape mismatch: {m['name']}: A {m['shape_a']} vs B {m['shape_b']}")
    md = r["metadata"]
    lines.append(
        f"metadata: {md['same']} same, {len(md['different'])} different, "
        f"{len(md['only_in_a'])} only in A, {len(md['only_in_b'])} only in B"
    )
    for key, label in (("only_in_a", "only in A"), ("only_in_b", "only in B")):
        if md[key]:
            lines.append(f"  {label}: {', '.join(md[key])}")
    for d in md["different"]:
        lines.append(f"  {d['key']}: {_short(d['a'])} -> {_short(d['b'])}")
    s = r["summary"]
    lines.append(
        f"{s['compared']} tensor(s) compared; min cosine {_num(s['min_cosine'], '.6f')}, "
        f"max rmse {_num(s['max_rmse'], '.4e')}"
    )
    return "\n".join(lines)


def _short(v: dict[str, Any]) -> str:
    if v["type"] == "ARRAY":
        return f"ARRAY[{v['item_type']}] x {v['count']}"
    text = repr(v["value"]) if isinstance(v["value"], str) else str(v["value"])
    return f"{v['type']} {text[:40]}{'...' if len(text) > 40 else ''}"
