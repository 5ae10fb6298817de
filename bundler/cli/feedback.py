"""What conversions show people: a llama-quantize-style line per tensor, a progress bar on
a terminal, and a closing summary; or one JSON report with --json."""

from __future__ import annotations

import argparse
import sys
from typing import Any

from bundler.containers import formats
from bundler.plan import Choice

MIB = float(1 << 20)


def add_output_flags(p: argparse.ArgumentParser, output_help: str = "the file to write") -> None:
    p.add_argument("-o", "--output", required=True, help=output_help)
    p.add_argument("--to", choices=formats(), help="output format")
    add_common_flags(p)
    p.add_argument(
        "--split-max-size", type=parse_size, metavar="SIZE",
        help="cut the output into shards of at most SIZE (e.g. 500M, 2G)",
    )  # fmt: skip
    p.add_argument(
        "--aprender", action="store_true",
        help="APR output: refuse codecs aprender itself cannot read",
    )  # fmt: skip
    add_report_flags(p)


def add_common_flags(p: argparse.ArgumentParser) -> None:
    """--force and --dry-run."""
    p.add_argument("--force", action="store_true", help="overwrite an existing output")
    p.add_argument("--dry-run", action="store_true", help="print the plan, write nothing")


def add_report_flags(p: argparse.ArgumentParser) -> None:
    """--json, and -q / -v."""
    p.add_argument("--json", action="store_true", help="print one JSON report")
    loud = p.add_mutually_exclusive_group()
    loud.add_argument("-q", "--quiet", action="store_true", help="print only errors")
    loud.add_argument("-v", "--verbose", action="store_true", help="say why each choice")


def parse_size(text: str) -> int:
    """'500M' -> 500,000,000 bytes (K, M, G, T are powers of 1000; KiB... powers of 1024)."""
    from bundler.errors import UsageError
    from bundler.sizes import parse_size as parse

    try:
        return parse(text)
    except UsageError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def tensor_line(choice: Choice, total: int) -> str:
    """One line per tensor, as llama-quantize prints them (dims in GGML order, ne[0] first)."""
    dims = list(reversed(choice.shape)) + [1] * (4 - len(choice.shape))
    shape = ", ".join(f"{d:5d}" for d in dims)
    width = len(str(total))
    head = f"[{choice.index + 1:{width}d}/{total:{width}d}] {choice.name:>36s} - [{shape}], "
    head += f"type = {choice.source.name:>6s}, "
    size = f"size = {choice.source_bytes / MIB:8.2f} MiB"
    if choice.action == "copy":
        return head + "copying .. " + size
    if choice.target == choice.source:  # a piece of an affine-quantized weight
        return head + f"{choice.action} {choice.note} .. " + size
    return (
        head
        + f"converting to {choice.target.name} .. {size} -> {choice.target_bytes / MIB:8.2f} MiB"
    )


class Feedback:
    """Prints tensor lines and drives a progress bar (on a terminal only)."""

    def __init__(self, args: argparse.Namespace, total_tensors: int, total_bytes: int):
        self.args = args
        self.total = total_tensors
        self.quiet = args.quiet or args.json
        self.bar = None
        if not args.quiet and sys.stderr.isatty():
            from tqdm import tqdm

            self.bar = tqdm(
                total=total_bytes, unit="B", unit_scale=True, unit_divisor=1024,
                file=sys.stderr, leave=False, desc="writing",
            )  # fmt: skip

    def tensor_started(self, choice: Choice) -> None:
        if self.quiet:
            return
        line = tensor_line(choice, self.total)
        if self.args.verbose and choice.note:
            line += f"  ({choice.note})"
        if self.bar is not None:
            self.bar.write(line, file=sys.stdout)
        else:
            print(line, flush=True)

    def advance(self, nbytes: int) -> None:
        if self.bar is not None:
            self.bar.update(nbytes)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


class Measuring:
    """A progress bar (on a terminal only) while a size target measures each tensor."""

    def __init__(self, args: argparse.Namespace):
        self.show = not (args.quiet or args.json) and sys.stderr.isatty()
        self.bar = None

    def __enter__(self) -> Measuring:
        return self

    def measured(self, name: str, n_values: int, total: int) -> None:
        if not self.show:
            return
        if self.bar is None:
            from tqdm import tqdm

            self.bar = tqdm(
                total=total, unit="values", unit_scale=True, file=sys.stderr, leave=False,
                desc="measuring codec errors",
            )  # fmt: skip
        self.bar.set_postfix_str(name, refresh=False)
        self.bar.update(n_values)

    def __exit__(self, *exc: object) -> None:
        if self.bar is not None:
            self.bar.close()


def mix_lines(target: dict[str, Any]) -> list[str]:
    """What a size target chose: the codec mix, the predicted size and error."""
    goal = (
        f"{target['target_size']:,} bytes"
        if target["target_size"] is not None
        else f"{target['target_bpw']:g} bits per weight = {target['target_bytes']:,} bytes"
    )
    mix = ", ".join(
        f"{n} {codec}" for codec, n in sorted(target["mix"].items(), key=lambda kv: -kv[1])
    )
    return [
        f"size target  = {goal} (reachable: {target['minimum_bytes']:,} .. "
        f"{target['maximum_bytes']:,})",
        f"chosen mix   = {mix}",
        f"predicted    = {target['predicted_bytes']:,} bytes, weighted squared error "
        f"{target['predicted_error']:.6g} ({target['relative_error']:.3e} of the weights' energy, "
        f"{target['free_tensors']} tensors chosen, {target['sampled_tensors']} on sampled rows)",
    ]


def summary(report: dict[str, Any]) -> str:
    src, dst = report["source_bytes"], report["target_bytes"]
    lines = [
        f"model size  = {src / MIB:10.2f} MiB",
        f"output size = {dst / MIB:10.2f} MiB (compression ratio {report['ratio'] or 0:.2f})",
    ]
    matrix = report.get("imatrix")
    if matrix:
        chunks = f" over {matrix['chunks_count']} chunks" if "chunks_count" in matrix else ""
        lines.append(
            f"importance matrix {matrix.get('file', '(given)')}: {matrix['entries_count']} "
            f"entries{chunks}, {matrix['weighted_tensors']} tensors encoded with weights"
        )
    if report["written"]:
        lines.append(
            f"wrote {', '.join(report['outputs']) or report['output']} ({report['format']}) "
            f"in {report['seconds']:.2f} s, {report['mib_per_s'] or 0:.0f} MiB/s"
        )
    else:
        lines.append(f"dry run: nothing written to {report['output']}")
    return "\n".join(lines)
