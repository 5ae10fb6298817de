"""`bundler batch`: quantize many models into one directory, with a closing table."""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from bundler.cli.feedback import MIB, add_output_flags, parse_size
from bundler.cli.imatrix import add_measure_flags
from bundler.cli.output import table
from bundler.cli.quantize import (
    add_affine_flags,
    add_plan_flags,
    add_size_target_flags,
    affine_type,
    plan_options,
)


def add_parser(sub: argparse._SubParsersAction) -> None:
    from bundler.batching.naming import DEFAULT_TEMPLATE, TEMPLATE_FIELDS

    b = sub.add_parser(
        "batch", help="quantize many models into a directory; one bad model stops nothing "
        "with --continue-on-error",
        description="Quantize every INPUT to each --type (several: Q4_K_M,Q8_0) into the "
        "output directory, then print a table of the results.",
    )  # fmt: skip
    b.add_argument("inputs", nargs="+", metavar="INPUT", help="model files or globs")
    add_plan_flags(b, type_required=False)
    add_affine_flags(b)  # quantize-rs's --bits (int8 when no --type) and --per-channel too
    add_size_target_flags(b, several=True)
    b.add_argument(
        "--text", metavar="FILE",
        help="measure each input's importance matrix over this text first, as `quantize "
        "--text` does (GGUF inputs; needs bundler[llama])",
    )  # fmt: skip
    add_measure_flags(b, threads=False)  # llama.cpp gets --threads
    fields = ", ".join("{" + f + "}" for f in TEMPLATE_FIELDS)
    b.add_argument(
        "--template", default=DEFAULT_TEMPLATE, metavar="TEMPLATE",
        help=f"output file name (default {DEFAULT_TEMPLATE}; fields: {fields})",
    )  # fmt: skip
    add_output_flags(b, output_help="the directory to write into (created if missing)")
    add_run_flags(b)
    b.set_defaults(func=run_batch)


def add_run_flags(p: argparse.ArgumentParser) -> None:
    """How a batch runs: shared by `batch` and `run`."""
    p.add_argument(
        "--skip-existing", action="store_true", help="keep outputs that exist; convert the rest"
    )
    p.add_argument(
        "--continue-on-error", action="store_true",
        help="convert every model even after one fails (the failures are listed at the end)",
    )  # fmt: skip
    p.add_argument(
        "-j", "--jobs", type=int, metavar="N",
        help="conversions at once on this machine (default 1), as many as fit in the "
        "memory budget at about 512 MiB each; the cores are shared among them",
    )  # fmt: skip
    p.add_argument(
        "--memory-budget", type=parse_size, metavar="SIZE",
        help="memory the parallel conversions may use together (default: half the "
        "available memory)",
    )  # fmt: skip
    p.add_argument(
        "--ray", nargs="?", const="local", metavar="ADDRESS",
        help="run on a Ray cluster: one task per conversion (no ADDRESS: start one here); "
        'needs pip install "bundler[ray]"',
    )  # fmt: skip
    p.add_argument("--report", metavar="FILE", help="write the JSON report to FILE too")


def run_batch(args: argparse.Namespace) -> int:
    from bundler import batching

    options = plan_options(args)
    given = options.pop("type")
    targets = _targets(args, given)
    types = [] if targets else _types(args, given)
    inputs = batching.expand_inputs(args.inputs)
    jobs = batching.make_jobs(
        inputs, args.output, types,
        options, template=args.template, format=args.to, split_max_size=args.split_max_size,
        aprender=args.aprender, threads=args.threads, skip_existing=args.skip_existing,
        targets=targets, candidates=args.candidates if targets else None,
        **_text_settings(args),
    )  # fmt: skip
    return execute(args, jobs, force=args.force, continue_on_error=args.continue_on_error)


def _text_settings(args: argparse.Namespace) -> dict[str, Any]:
    """The Job fields --text, --ctx and --chunks give."""
    from bundler.cli.quantize import _measuring

    if not _measuring(args):
        return {}
    return {"text": args.text, "text_context": args.ctx, "text_chunks": args.chunks}


def _targets(args: argparse.Namespace, given: str | None) -> list:
    """The size targets --target-size / --target-bpw give, after checking that no option
    that chooses codecs another way is given with them."""
    from bundler.batching.targets import parse_targets
    from bundler.errors import UsageError

    targets = parse_targets(args.target_size, args.target_bpw)
    if not targets:
        if args.candidates:
            raise UsageError("--candidates needs --target-size or --target-bpw")
        return []
    other = [f"--{f}" for f, v in (("type", given), ("bits", args.bits)) if v]
    other += [
        "--" + f.replace("_", "-")
        for f in ("group_size", "per_channel", "asym", "calibration", "scale_dtype", "pure")
        if getattr(args, f)
    ]
    other += ["--prune-layers"] if args.prune_layers else []
    if other:
        raise UsageError(f"a size target chooses every tensor's codec: drop {', '.join(other)}")
    return targets


def _types(args: argparse.Namespace, given: str | None) -> list[str]:
    """Each comma-separated --type with the affine flags folded in, as `quantize` folds them;
    with neither --type nor --bits, quantize-rs's default width (int8)."""
    from bundler.batching.naming import DEFAULT_BITS

    names = list(dict.fromkeys(t for t in (given or "").split(",") if t)) or [None]
    bits = DEFAULT_BITS if names == [None] and args.bits is None else args.bits
    asked = vars(args)
    return [affine_type(argparse.Namespace(**{**asked, "type": t, "bits": bits})) for t in names]


def execute(args: argparse.Namespace, jobs: list, **settings: Any) -> int:
    """Run `jobs` with a progress bar over them, then print the table and write the report."""
    from bundler import batching

    settings["jobs_at_once"] = args.jobs or settings.get("jobs_at_once", 1)
    settings["memory_budget"] = args.memory_budget or settings.get("memory_budget")
    progress = Progress(args, len(jobs))
    try:
        report = batching.execute(
            jobs, dry_run=args.dry_run, ray=args.ray, on_result=progress.result, **settings
        )
    finally:
        progress.close()
    data = report.as_dict()
    if args.report:
        write_report(args.report, data)
    if args.json:
        json.dump(data, sys.stdout, sort_keys=True, indent=2)
        sys.stdout.write("\n")
    elif not args.quiet:
        print(closing_table(report))
    for r in report.failures:
        print(f"bundler: error: {r.input}: {r.error_type}: {r.error}", file=sys.stderr)
    if not report.ok:
        failed, unrun = len(report.failures), data["counts"].get("not run", 0)
        more = f"; {unrun} not run (use --continue-on-error)" if unrun else ""
        print(f"bundler: {failed} of {len(report)} conversions failed{more}", file=sys.stderr)
    return report.exit_code


class Progress:
    """One bar over the conversions on a terminal; a line per finished one otherwise."""

    def __init__(self, args: argparse.Namespace, total: int):
        self.args, self.total, self.done = args, total, 0
        self.bar = None
        if not args.quiet and sys.stderr.isatty():
            from tqdm import tqdm

            self.bar = tqdm(
                total=total,
                unit="model",
                file=sys.stderr,
                leave=False,
                desc="batch",
                mininterval=0,  # few updates, each a finished model: show every one
            )

    def result(self, r: Any) -> None:
        self.done += 1
        width = len(str(self.total))
        line = f"[{self.done:{width}d}/{self.total}] {r.status:7s} {r.output}"
        if self.bar is not None:
            self.bar.update(1)
            self.bar.set_postfix_str(f"{r.status}: {r.output}", refresh=False)
            if getattr(self.args, "verbose", False):
                self.bar.write(line, file=sys.stdout)
        elif not (self.args.quiet or self.args.json):
            print(line, flush=True)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


def closing_table(report: Any) -> str:
    rows = []
    for r in report:
        rows.append([
            r.input, r.type or "", r.status,
            f"{r.source_bytes / MIB:.2f}" if r.source_bytes is not None else "",
            f"{r.target_bytes / MIB:.2f}" if r.target_bytes is not None else "",
            f"{r.ratio:.2f}" if r.ratio else "",
            f"{r.seconds:.2f}" if r.status == "ok" else "",
            r.output if r.status != "failed" else f"{r.error_type}: {r.error}",
        ])  # fmt: skip
    header = ["model", "type", "status", "MiB in", "MiB out", "ratio", "s", "output / error"]
    data = report.as_dict()
    counts = ", ".join(f"{n} {s}" for s, n in sorted(data["counts"].items()))
    total = f"{len(report)} conversions ({counts}) in {report.seconds:.2f} s"
    if report.runner == "ray":
        total += ", one Ray task each (ray)"
    elif report.runner == "local":
        total += f", {report.workers} at once (local)"
    if report.runner == "dry run":
        planned = [r for r in report if r.status == "planned"]
        src = sum(r.source_bytes or 0 for r in planned) / MIB
        dst = sum(r.target_bytes or 0 for r in planned) / MIB
        total += f"; planned {src:.2f} MiB -> {dst:.2f} MiB, nothing written"
    return table(rows, header, "<<<>>>><") + "\n" + total


def write_report(path: str, data: dict) -> None:
    from bundler.atomic import atomic_output

    with atomic_output(path) as f:
        f.write((json.dumps(data, sort_keys=True, indent=2) + "\n").encode())
