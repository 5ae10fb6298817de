"""`bundler bench coldstart`: first-use and start-up times of `quantize`, in new processes."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from bundler.cli.output import add_json_flag, emit, positive_int, table


def add_bench_parser(kinds: argparse._SubParsersAction) -> None:
    p = kinds.add_parser(
        "coldstart",
        help="first quantize with an empty kernel cache, then warm, in new processes",
    )
    p.add_argument(
        "--input", type=Path, default=None, help="model to quantize (default: MiniLM SafeTensors)"
    )
    p.add_argument(
        "--repeat", type=positive_int, default=3, help="warm runs per measurement (best kept)"
    )
    add_json_flag(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from bundler.bench.coldstart import run as measure

    emit(args, measure(args.input, args.repeat), _human)
    return 0


def _human(report: dict[str, Any]) -> str:
    def mark(seconds: float, goal: float) -> str:
        return f"{seconds:.2f}" + ("" if seconds <= goal else " (over)")

    rows = [
        [
            r["type"],
            mark(r["cold_seconds"], r["cold_goal_seconds"]),
            f"{r['cold_cpu_seconds']:.2f}",
            f"{r['cold_goal_seconds']:g}",
            f"{r['warm_seconds']:.2f}",
            mark(r["warm_start_seconds"], r["warm_start_goal_seconds"]),
            f"{r['warm_start_cpu_seconds']:.2f}",
            f"{r['warm_start_goal_seconds']:g}",
        ]
        for r in report["results"]
    ]
    head = ["type", "cold s", "cpu s", "goal", "warm s", "warm start s", "cpu s", "goal"]
    notes = [
        f"\nnote: {r['type']}: " + ("the cold run did not compile" if not r["cold_compiled"]
                                     else "a warm run compiled: its figures are not warm")
        for r in report["results"]
        if not r["cold_compiled"] or r["warm_compiled"]
    ]  # fmt: skip
    return (
        f"bundler quantize {report['source']} ({report['source_bytes'] / 2**20:.1f} MiB), "
        f"each run a new process; cold: empty kernel cache\n"
        + table(rows, head, "<>>>>>>>")
        + "".join(notes)
        + (
            "\nnote: PYTHONDONTWRITEBYTECODE was cleared for the runs (bytecode cached, as an "
            "installed package has it)"
            if report.get("bytecode_setting_cleared")
            else ""
        )
    )
