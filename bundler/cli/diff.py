"""`bundler diff`: per-tensor error figures between two model files of any formats."""

from __future__ import annotations

import argparse
from typing import Any

from bundler.cli.output import add_json_flag, emit, table

#: Tensor names shown in a list (the threshold error, the unmatched tensors).
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
        help="exit 5 when a compared tensor's cosine similarity is below MIN_COSINE "
        "(diff exits 5 whenever no tensor could be compared)",
    )  # fmt: skip
    p.add_argument(
        "--plot", metavar="PNG",
        help="draw each tensor's error by layer and a layers x tensor kind heatmap into PNG "
        "(needs bundler[plot])",
    )  # fmt: skip
    add_json_flag(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from bundler.diff import diff
    from bundler.errors import ValidationError

    if args.plot:
        from bundler.plot import require

        require()
    report = diff(args.a, args.b, args.threshold)
    if args.plot:
        from bundler.plot import diff_figure

        diff_figure(report, args.plot)
    emit(args, report, human)
    compared = report["summary"]["compared"]
    if compared == 0:
        raise ValidationError(
            f"nothing compared: {args.a} and {args.b} have no tensor of the same name and "
            f"shape ({len(report['only_in_a'])} only in A, {len(report['only_in_b'])} only "
            f"in B, {len(report['shape_mismatches'])} of different shapes)"
        )
    below = report["below_threshold"]
    if below:
        raise ValidationError(
            f"{len(below)} of {compared} compared tensor(s) have a cosine similarity below "
            f"{args.threshold}: {_names(below)}"
        )
    return 0


def _names(names: list[str]) -> str:
    shown = ", ".join(names[:NAMED])
    return shown + (f" and {len(names) - NAMED} more" if len(names) > NAMED else "")


#: The report's keys for what only one side has, and how the human report names them.
SIDES = (("only_in_a", "only in A"), ("only_in_b", "only in B"))


def _listing(names: list[str]) -> list[str]:
    """One indented line per name, the first NAMED of them."""
    more = [f"  ... and {len(names) - NAMED} more (--json lists them all)"]
    return [f"  {name}" for name in names[:NAMED]] + (more if len(names) > NAMED else [])


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
    lines += [f"not compared: {t['name']}: {t['error']}" for t in r["tensors"] if t["error"]]
    for key, label in SIDES:
        if r[key]:
            lines += [f"{len(r[key])} tensor(s) {label}, not compared:", *_listing(r[key])]
    lines += [
        f"shape mismatch: {m['name']}: A {m['shape_a']} vs B {m['shape_b']}"
        for m in r["shape_mismatches"]
    ]
    md = r["metadata"]
    lines.append(
        f"metadata: {md['same']} same, {len(md['different'])} different, "
        f"{len(md['only_in_a'])} only in A, {len(md['only_in_b'])} only in B"
    )
    lines += [f"  {label}: {_names(md[key])}" for key, label in SIDES if md[key]]
    lines += [f"  {d['key']}: {_short(d['a'])} -> {_short(d['b'])}" for d in md["different"]]
    s = r["summary"]
    lines.append(
        f"{s['compared']} tensor(s) compared; min cosine {_num(s['min_cosine'], '.6f')}, "
        f"max rmse {_num(s['max_rmse'], '.4e')}"
    )
    if r["threshold"] is not None and s["compared"]:
        lines.append(
            f"threshold {r['threshold']}: {len(r['below_threshold'])} of the {s['compared']} "
            "compared tensor(s) below"
        )
    return "\n".join(lines)


def _short(v: dict[str, Any]) -> str:
    if v["type"] == "ARRAY":
        return f"ARRAY[{v['item_type']}] x {v['count']}"
    text = repr(v["value"]) if isinstance(v["value"], str) else str(v["value"])
    return f"{v['type']} {text[:40]}{'...' if len(text) > 40 else ''}"
