"""Commands a format offers beyond reading and writing, found by asking the input's format
for them (the CLI never names a format): quantizing a model in its own format
(`quantize_native`, e.g. ONNX weights rewritten around DequantizeLinear), comparing two
models by running them (`compare_models`, `validate ORIGINAL QUANTIZED`) and benchmarking
them (`benchmark_models`). Output formatting only; the work is in the format's package."""

from __future__ import annotations

import argparse
import re
from typing import Any

from bundler.cli.output import emit, table
from bundler.errors import EXIT_OK, EXIT_VALIDATION, UsageError

MIB = float(1 << 20)


def capability(path: str, name: str) -> Any | None:
    """The format of the file at `path` if it offers `name`, else None."""
    from bundler.containers import detect, module

    fmt = module(detect(path))
    return fmt if hasattr(fmt, name) else None


def runnable(paths: list[str], name: str, what: str) -> Any:
    """The one format of `paths` offering `name`; a usage error otherwise."""
    from bundler.containers import detect, module

    kinds = {detect(p) for p in paths}
    fmt = module(kinds.pop()) if len(kinds) == 1 else None
    if fmt is None or not hasattr(fmt, name):
        raise UsageError(f"{what} takes two models of one format that can run them (ONNX)")
    return fmt


def is_native_rewrite(args: argparse.Namespace) -> bool:
    """True when `quantize` reads a model whose format quantizes in place, into that format."""
    from bundler.containers import format_for_path

    fmt = capability(args.input, "quantize_native")
    return fmt is not None and (args.to or format_for_path(args.output)) == fmt.NAME


def native_type(args: argparse.Namespace) -> str:
    """--type / --bits / --asym as one integer type (int8, uint8, int4, uint4)."""
    base = args.type.lower() if args.type else None
    if args.bits is not None:
        want = f"int{args.bits}"
        if base is not None and base.lstrip("u") != want:
            raise UsageError(f"--bits {args.bits} contradicts --type {args.type}")
        base = base or want
    if base is None:
        raise UsageError("quantize needs --type int8|uint8|int4|uint4 (or --bits 4|8)")
    if args.asym and base.startswith("int"):
        base = "u" + base
    return base


def run_quantize(args: argparse.Namespace) -> int:
    fmt = capability(args.input, "quantize_native")
    if getattr(args, "calibration", None) or getattr(args, "scale_dtype", None):
        raise UsageError(f"--calibration and --scale-dtype do not apply to {fmt.TITLE} output")
    if args.split_max_size or args.aprender:
        raise UsageError(f"--split-max-size and --aprender do not apply to {fmt.TITLE} output")
    report = fmt.quantize_native(
        args.input, args.output, type=native_type(args), per_channel=args.per_channel,
        group_size=args.group_size, tensor_types=list(args.tensor_type),
        matmul_nbits=args.matmul_nbits, allow_requantize=args.allow_requantize,
        force=args.force, dry_run=args.dry_run,
    )  # fmt: skip
    if args.quiet and not args.json:
        return 0
    emit(args, report, lambda r: quantize_human(r, args.dry_run or args.verbose))
    return 0


def quantize_human(report: dict[str, Any], per_tensor: bool) -> str:
    lines = []
    if per_tensor:
        for t in report["tensors"]:
            what = (
                f"{t['type']} {t['granularity']}"
                + (f" {t['block_size']}" if t["granularity"] == "block" else "")
                + (f" axis {t['axis']}" if t["axis"] is not None else "")
                + f" -> {t['layout']}"
                + (f" ({t['reason']})" if t["reason"] != "default type" else "")
                if t["action"] == "quantize"
                else f"kept: {t['reason']}"
            )
            lines.append(f"{t['name']} {t['shape']} {t['dtype']}: {what}")
    verb = "would write" if not report["written"] else "wrote"
    opset = (
        f"opset {report['opset_before']} -> {report['opset_after']}"
        if report["opset_after"] != report["opset_before"]
        else f"opset {report['opset_before']} kept"
    )
    sizes = f"weights {report['weight_bytes_before'] / MIB:.2f} -> "
    sizes += f"{report['weight_bytes_after'] / MIB:.2f} MiB"
    if report["written"]:
        before, after = report["source_bytes"] / MIB, report["output_bytes"] / MIB
        sizes += f"; file {before:.2f} -> {after:.2f} MiB"
    lines.append(
        f"{verb} {report['output']}: {report['quantized']} weights quantized, "
        f"{report['kept']} float tensors kept; {opset}; {sizes} ({report['seconds']:.2f} s)"
    )
    return "\n".join(lines)


def add_input_flags(p: argparse.ArgumentParser, scope: str, dynamic: str) -> None:
    """--input-shape and --input-value (read by `parse_shapes` and `parse_values`): the inputs
    of models run side by side; `scope` prefixes their help, `dynamic` says what a dynamic
    dimension becomes."""
    p.add_argument(
        "--input-shape", action="append", default=[], metavar="NAME=1x3x224x224",
        help=f"{scope}the shape of a model input (dynamic dimensions default {dynamic})",
    )  # fmt: skip
    p.add_argument(
        "--input-value", action="append", default=[], metavar="NAME=NUMBER",
        help=f"{scope}fill this input with one value (e.g. a sample rate)",
    )  # fmt: skip


def parse_shapes(items: list[str]) -> dict[str, tuple[int, ...]]:
    """`name=1x3x224x224` items as {name: shape}."""
    shapes = {}
    for item in items:
        name, sep, dims = item.rpartition("=")
        if not sep or not name or not re.fullmatch(r"\d+(x\d+)*|", dims):
            raise UsageError(
                f"--input-shape wants NAME=1x3x224x224 (or NAME= for a scalar), got {item!r}"
            )
        shapes[name] = tuple(int(d) for d in dims.split("x")) if dims else ()
    return shapes


def parse_values(items: list[str]) -> dict[str, float]:
    """`name=16000` items as {name: value} (inputs filled with one value)."""
    values = {}
    for item in items:
        name, sep, text = item.rpartition("=")
        try:
            values[name] = float(text)
        except ValueError:
            name = ""
        if not sep or not name:
            raise UsageError(f"--input-value wants NAME=NUMBER, got {item!r}")
    return values


def run_validate_pair(args: argparse.Namespace) -> int:
    fmt = runnable([args.file, args.quantized], "compare_models", "validate with two files")
    if args.samples < 1:
        raise UsageError("--samples must be at least 1")
    report = fmt.compare_models(
        args.file,
        args.quantized,
        threshold=args.threshold,
        shapes=parse_shapes(args.input_shape),
        samples=args.samples,
        seed=args.seed,
        values=parse_values(args.input_value),
    )
    if not args.detailed:
        report["weights"].pop("rows")
    emit(args, report, pair_human)
    return EXIT_OK if report["passed"] else EXIT_VALIDATION


def _fmt(value: float | None, spec: str = ".6f") -> str:
    return "-" if value is None else format(value, spec)


def pair_human(r: dict[str, Any]) -> str:
    a, b = r["structure"]["original"], r["structure"]["quantized"]
    lines = [f"{r['original']} vs {r['quantized']}", "", "structure"]
    lines.append(
        table(
            [
                ["nodes", a["nodes"], b["nodes"]],
                ["graphs", a["graphs"], b["graphs"]],
                ["inputs", len(a["inputs"]), len(b["inputs"])],
                ["outputs", len(a["outputs"]), len(b["outputs"])],
                ["opset", a["opsets"].get("ai.onnx"), b["opsets"].get("ai.onnx")],
            ],
            ["", "original", "quantized"],
            "<>>",
        )
    )
    added = {k: v - a["ops"].get(k, 0) for k, v in b["ops"].items() if v != a["ops"].get(k, 0)}
    removed = {k: v for k, v in a["ops"].items() if k not in b["ops"]}
    if added or removed:
        change = [f"{k} {v:+d}" for k, v in added.items()] + [
            f"{k} -{v}" for k, v in removed.items()
        ]
        lines.append("ops changed: " + ", ".join(change))
    w = r["weights"]
    lines += [
        "",
        f"weights: {w['original_float']} float tensors; {w['quantized']} quantized, "
        f"{w['unchanged']} unchanged, {w['changed']} changed, {w['missing']} missing; "
        f"{w['nonfinite']} non-finite values; worst relative RMSE {w['worst_relative_rmse']:.4g}",
    ]
    if "rows" in w:
        body = [
            [
                x["name"],
                "x".join(map(str, x["shape"])),
                x["status"],
                x.get("how") or "",
                _fmt(x.get("relative_rmse"), ".4g"),
                _fmt(x.get("max_abs_error"), ".4g"),
                _fmt(x.get("cosine")),
            ]
            for x in w["rows"]
        ]
        head = ["weight", "shape", "status", "how", "rel. RMSE", "max err", "cosine"]
        lines += ["", table(body, head, "<<<<>>>")]
    s = r["size"]
    lines += [
        "",
        f"size: {s['original_bytes']:,} -> {s['quantized_bytes']:,} bytes "
        f"({_fmt(s['ratio'], '.3f')}x)",
    ]
    if r["runtime"]:
        rt = r["runtime"]
        shapes = ", ".join(f"{k}={'x'.join(map(str, v))}" for k, v in rt["inputs"].items())
        lines += ["", f"ONNX Runtime, {rt['samples']} generated input sets ({shapes})"]
        body = [
            [
                name,
                _fmt(m["cosine"]),
                _fmt(m["max_abs_error"], ".4g"),
                _fmt(m["mean_abs_error"], ".4g"),
                _fmt(m["top1"], ".3f"),
            ]
            for name, m in rt["outputs"].items()
        ]
        lines.append(table(body, ["output", "cosine", "max err", "mean err", "top-1"], "<>>>>"))
    lines.append("")
    for f in r["failures"]:
        lines.append(f"failed: {f}")
    verdict = "PASSED" if r["passed"] else "FAILED"
    lines.append(f"{verdict} (threshold: cosine >= {r['threshold']})")
    return "\n".join(lines)
