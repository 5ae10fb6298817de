"""`bundler run CONFIG`: the conversions a YAML or TOML file lists, checked before any runs."""

from __future__ import annotations

import argparse
from dataclasses import replace

from bundler.cli.batch import add_run_flags, execute
from bundler.cli.feedback import add_common_flags


def add_parser(sub: argparse._SubParsersAction) -> None:
    r = sub.add_parser(
        "run", help="run the conversions of a YAML or TOML config (quantize-rs's or richer)"
    )
    r.add_argument("config", help="a .yaml, .yml or .toml file")
    add_common_flags(r)
    add_run_flags(r)
    r.add_argument("--json", action="store_true", help="print one JSON report")
    r.add_argument("-q", "--quiet", action="store_true", help="print only errors")
    r.set_defaults(func=run_config)


def run_config(args: argparse.Namespace) -> int:
    from bundler.batching import read_config

    config = read_config(args.config)
    jobs = config.jobs
    if args.skip_existing:
        jobs = [replace(j, skip_existing=True) for j in jobs]
    return execute(
        args, jobs, force=args.force or config.force,
        continue_on_error=args.continue_on_error or config.continue_on_error,
        jobs_at_once=config.jobs_at_once, memory_budget=config.memory_budget,
    )  # fmt: skip
