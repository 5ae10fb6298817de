"""`bundler benchmark ORIGINAL QUANTIZED`: two models side by side in their runtime (ONNX
models under ONNX Runtime)."""

from __future__ import annotations

import argparse
from typing import Any

from bundler.cli.models import add_input_flags
from bundler.cli.output import add_json_flag, emit, table


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "benchmark",
        help="ONNX: load time, latency (median, p90), peak memory and size of two models",
    )
    p.add_argument("original", help="ONNX model")
    p.add_argument("quantized", help="ONNX model with the same inputs (e.g. its quantized form)")
    p.add_argument("--runs", type=int, default=50, help="timed runs per model (default 50)")
    p.add_argument("--warmup", type=int, default=5, help="untimed runs first (default 5)")
    p.add_argument("--threads", type=int, help="ONNX Runtime intra-op threads (default: its own)")
    add_input_flags(p, "", "to 1")
    add_json_flag(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from bundler.cli.models import parse_shapes, parse_values, runnable
    from bundler.errors import UsageError

    fmt = runnable([args.original, args.quantized], "benchmark_models", "benchmark")
    if args.runs < 1 or args.warmup < 0:
        raise UsageError("--runs must be at least 1 and --warmup at least 0")
    result = fmt.benchmark_models(
        args.original, args.quantized, shapes=parse_shapes(args.input_shape),
        values=parse_values(args.input_value), runs=args.runs, warmup=args.warmup,
        threads=args.threads,
    )  # fmt: skip
    emit(args, result, human)
    return 0


def _ms(v: float) -> str:
    return f"{v * 1000:.3f} ms"


def _mib(v: int) -> str:
    return f"{v / (1 << 20):.2f} MiB"


def human(r: dict[str, Any]) -> str:
    a, b, ratio = r["original"], r["quantized"], r["ratios"]
    rows = []
    for label, key, fmt in (
        ("load", "load_seconds", _ms),
        ("latency median", "latency_median_seconds", _ms),
        ("latency p90", "latency_p90_seconds", _ms),
        ("peak memory (above start)", "peak_above_start_bytes", _mib),
        ("file size", "file_bytes", _mib),
    ):
        x = ratio.get(key)
        rows.append([label, fmt(a[key]), fmt(b[key]), "-" if x is None else f"{x:.2f}x"])
    head = ["", "original", "quantized", "ratio"]
    shapes = ", ".join(f"{k}={'x'.join(map(str, v))}" for k, v in a["inputs"].items())
    return (
        f"{a['path']} vs {b['path']}: ONNX Runtime CPU, {r['warmup']} warm-up then "
        f"{r['runs']} timed runs each ({shapes})\n" + table(rows, head, "<>>>")
    )
