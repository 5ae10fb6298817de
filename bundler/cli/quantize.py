"""`bundler quantize` and `bundler convert`: the pipeline on the command line."""

from __future__ import annotations

import argparse
import json
import sys
import warnings

from bundler.cli.feedback import (
    Feedback,
    Measuring,
    add_output_flags,
    mix_lines,
    parse_size,
    summary,
    tensor_line,
)
from bundler.errors import UsageError


def _tensor_type(text: str) -> tuple[str, str]:
    from bundler.plan.planner import compile_pattern

    regex, sep, codec = text.rpartition("=")
    if not sep or not regex or not codec:
        raise argparse.ArgumentTypeError(f"expected REGEX=CODEC, got {text!r}")
    regex = regex.lower()  # llama-quantize lowercases the pattern (tensor names are lowercase)
    try:
        compile_pattern(regex)
    except UsageError as exc:
        raise argparse.ArgumentTypeError(str(exc).removeprefix("--tensor-type: ")) from None
    return regex, codec


def add_parser(sub: argparse._SubParsersAction) -> None:
    q = sub.add_parser("quantize", help="quantize a model into any format")
    q.add_argument("input", help="GGUF, SafeTensors (file, index or directory), APR or ONNX")
    add_plan_flags(q)
    add_target_flags(q)
    add_imatrix_flags(q)
    add_affine_flags(q)
    q.add_argument(
        "--keep-split", action="store_true",
        help="GGUF: write each tensor into the shard matching the input file it comes from "
        "(<stem>-0000N-of-0000M.gguf)",
    )  # fmt: skip
    q.add_argument(
        "--matmul-nbits", action="store_true",
        help="ONNX to ONNX, 4-bit: MatMul weights as ONNX Runtime's MatMulNBits (com.microsoft)",
    )  # fmt: skip
    add_output_flags(q)
    q.set_defaults(func=run_quantize)

    c = sub.add_parser("convert", help="change the container format; tensors copied bit for bit")
    c.add_argument("input", help="GGUF, SafeTensors (file, index or directory) or APR")
    add_output_flags(c)
    c.set_defaults(func=run_convert)


def add_plan_flags(q: argparse.ArgumentParser, type_required: bool = True) -> None:
    """The options that choose each tensor's codec (PlanOptions), and --threads."""
    q.add_argument(
        "--type",
        help="codec or file type: Q4_0, Q8_0, Q4_K_M, F16..., or an affine codec: int8, int4, "
        "int4:g128:asym:mse (see `bundler types`)",
    )
    q.set_defaults(type_required=type_required)
    q.add_argument(
        "--tensor-type", action="append", type=_tensor_type, default=[], metavar="REGEX=CODEC",
        help="give tensors whose name matches REGEX this codec (first match wins)",
    )  # fmt: skip
    q.add_argument(
        "--pure", action="store_true", help="no per-tensor mixture: every weight gets --type"
    )
    q.add_argument("--leave-output-tensor", action="store_true", help="keep output.weight as it is")
    q.add_argument("--output-tensor-type", metavar="CODEC", help="codec of output.weight")
    q.add_argument("--token-embedding-type", metavar="CODEC", help="codec of token_embd.weight")
    q.add_argument(
        "--allow-requantize", action="store_true",
        help="allow quantizing tensors that are already quantized (loses accuracy)",
    )  # fmt: skip
    q.add_argument(
        "--tensor-type-file", action=_TensorTypeFile, dest="tensor_type", metavar="FILE",
        help="--tensor-type REGEX=CODEC entries from FILE, separated by blanks or newlines",
    )  # fmt: skip
    q.add_argument(
        "--override-kv", action="append", default=[], metavar="KEY=TYPE:VALUE",
        help="set metadata KEY in the output; TYPE is int, float, bool or str (repeatable)",
    )  # fmt: skip
    q.add_argument(
        "--prune-layers", type=_layers, default=[], metavar="L0,L1,...",
        help="drop these blocks (blk.N) and renumber the rest",
    )  # fmt: skip
    q.add_argument("--threads", type=int, help="encoding threads (default: all cores)")


def _bpw(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not (value > 0 and value < float("inf")):
        raise argparse.ArgumentTypeError(f"bits per weight must be positive, got {text}")
    return value


def add_target_flags(q: argparse.ArgumentParser) -> None:
    """--target-size / --target-bpw (instead of --type), --candidates and --plot."""
    add_size_target_flags(q)
    q.add_argument(
        "--plot", metavar="PNG",
        help="draw the plan's bytes by layer and codec into PNG (needs bundler[plot])",
    )  # fmt: skip


#: --target-size and --target-bpw: (one target, for quantize; several, for batch).
_TARGET_FLAGS = {
    "--target-size": (
        {"type": parse_size, "metavar": "SIZE",
         "help": "instead of --type: choose each tensor's codec so the output file is at most "
         "SIZE bytes with the least error (80M = 80*10^6 bytes, 75MiB = 75*2^20; K, M, G, T "
         "and KiB, MiB, GiB, TiB)"},
        {"metavar": "SIZES",
         "help": "instead of --type: one output per SIZE (comma-separated: 80M,60M), each "
         "tensor's codec chosen as `quantize --target-size` chooses it; named target-80M"},
    ),
    "--target-bpw": (
        {"type": _bpw, "metavar": "BITS",
         "help": "instead of --type: as --target-size, for a file of BITS bits per value"},
        {"metavar": "BITS",
         "help": "instead of --type: one output per bits-per-weight target (comma-separated)"},
    ),
}  # fmt: skip


def add_size_target_flags(q: argparse.ArgumentParser, several: bool = False) -> None:
    """--target-size / --target-bpw and --candidates: one of the two targets (quantize), or
    with `several` comma-separated lists of both, one output per target (batch)."""
    group = q if several else q.add_mutually_exclusive_group()
    for flag, (one, many) in _TARGET_FLAGS.items():
        group.add_argument(flag, **(many if several else one))
    add_candidates_flag(q)


def add_candidates_flag(q: argparse.ArgumentParser) -> None:
    """--candidates: the codecs a size target chooses from."""
    from bundler.plan.curves import CANDIDATES

    q.add_argument(
        "--candidates", metavar="CODECS",
        help="with a size target: the codecs to choose from, comma-separated (default: "
        f"{','.join(CANDIDATES)})",
    )  # fmt: skip


def _layers(text: str) -> list[int]:
    from bundler.errors import UsageError
    from bundler.plan.prune import parse_layers

    try:
        return parse_layers(text)
    except UsageError as exc:
        raise argparse.ArgumentTypeError(str(exc).removeprefix("--prune-layers: ")) from None


class _TensorTypeFile(argparse.Action):
    """Reads REGEX=CODEC entries from a file into --tensor-type's list, in argument order."""

    def __call__(self, parser, namespace, path, option_string=None) -> None:
        try:
            with open(path, encoding="utf-8") as f:
                words = f.read().split()
        except (OSError, UnicodeDecodeError) as exc:
            parser.error(f"--tensor-type-file {path}: {getattr(exc, 'strerror', None) or exc}")
        entries = list(getattr(namespace, self.dest, None) or [])
        for word in words:
            try:
                entries.append(_tensor_type(word))
            except argparse.ArgumentTypeError as exc:
                parser.error(f"--tensor-type-file {path}: {exc}")
        setattr(namespace, self.dest, entries)


def add_imatrix_flags(q: argparse.ArgumentParser) -> None:
    """llama-quantize's importance matrix options."""
    q.add_argument(
        "--imatrix", metavar="FILE",
        help="importance matrix from llama-imatrix (GGUF or legacy .dat): the block codecs "
        "weigh each column's error by it",
    )  # fmt: skip
    q.add_argument(
        "--include-weights", action="append", default=[], metavar="NAME",
        help="use the matrix only for tensors whose name contains NAME (repeatable)",
    )  # fmt: skip
    q.add_argument(
        "--exclude-weights", action="append", default=[], metavar="NAME",
        help="do not use the matrix for tensors whose name contains NAME (repeatable; "
        "not with --include-weights)",
    )  # fmt: skip
    q.add_argument(
        "--text", metavar="FILE",
        help="instead of --imatrix: measure the importance matrix by running the input (a "
        "GGUF model, in llama.cpp: bundler[llama]) over this text first, as `bundler "
        "imatrix` does",
    )  # fmt: skip
    from bundler.cli.imatrix import add_measure_flags

    add_measure_flags(q)


def add_affine_flags(q: argparse.ArgumentParser) -> None:
    """`quantize`'s affine options, folded into --type by `affine_type`."""
    q.add_argument("--bits", type=int, choices=(2, 3, 4, 8, 16), help="affine: int<bits> codes")
    q.add_argument("--group-size", type=int, metavar="G", help="affine: one scale per G values")
    q.add_argument(
        "--per-channel", action="store_true", help="affine: one scale per output channel"
    )
    q.add_argument("--asym", action="store_true", help="affine: unsigned codes with a zero point")
    q.add_argument(
        "--calibration", metavar="METHOD",
        help="affine: minmax (default), p99.9, p<lo>-<hi>, meanstd3, mse, entropy",
    )  # fmt: skip
    q.add_argument(
        "--scale-dtype", choices=("f32", "f16", "bf16"), help="affine: dtype of the scales"
    )


def plan_options(args: argparse.Namespace) -> dict:
    """The PlanOptions fields `add_plan_flags`' options gave."""
    return {
        "type": args.type,
        "tensor_types": args.tensor_type,
        "pure": args.pure,
        "leave_output_tensor": args.leave_output_tensor,
        "output_tensor_type": args.output_tensor_type,
        "token_embedding_type": args.token_embedding_type,
        "allow_requantize": args.allow_requantize,
        "override_kv": args.override_kv,
        "prune_layers": args.prune_layers,
        "imatrix": getattr(args, "imatrix", None),
        "include_weights": getattr(args, "include_weights", []),
        "exclude_weights": getattr(args, "exclude_weights", []),
    }


def _run(args: argparse.Namespace, plan_options: dict | None) -> int:
    from bundler.containers import open_bundle
    from bundler.pipeline import _check_paths, output_format, plan_output, write_bundle
    from bundler.plan import PlanOptions

    _check_paths(args.input, args.output, args.force or args.dry_run)
    output_format(args.output, args.to)
    target = _target(args)
    if getattr(args, "plot", None):
        from bundler.plot import require

        require()
    if plan_options is not None and _measuring(args):
        from bundler.cli.imatrix import measured

        plan_options = {**plan_options, "imatrix": measured(args, args.input).matrix()}
    options = PlanOptions(**plan_options) if plan_options else None
    write_options = {"aprender": True} if args.aprender else None
    with Measuring(args) as measuring:
        bundle, plan = plan_output(
            open_bundle(args.input), options, args.output, format=args.to, target=target,
            split_max_size=args.split_max_size, write_options=write_options,
            candidates=getattr(args, "candidates", None), progress=measuring.measured,
        )  # fmt: skip
    if getattr(args, "plot", None):
        from bundler.plot import plan_figure

        plan_figure(plan, args.plot)
    feedback = Feedback(args, len(plan.choices), plan.target_bytes)
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            report = write_bundle(
                bundle, plan, args.output, format=args.to, force=args.force,
                dry_run=args.dry_run, split_max_size=args.split_max_size,
                observer=feedback, source_name=args.input, write_options=write_options,
                keep_split=getattr(args, "keep_split", False),
            )  # fmt: skip
    finally:
        feedback.close()
    for w in caught:
        print(f"bundler: warning: {w.message}", file=sys.stderr)
    result = report.as_dict()
    if args.json:
        json.dump(result, sys.stdout, sort_keys=True, indent=2)
        sys.stdout.write("\n")
    elif not args.quiet:
        if args.dry_run:
            for choice in plan.choices:
                print(tensor_line(choice, len(plan.choices)))
        if result["target"] is not None:
            print("\n".join(mix_lines(result["target"])))
        print(summary(result))
    return 0


def run_quantize(args: argparse.Namespace) -> int:
    from bundler.cli import models

    if models.is_native_rewrite(args):
        if _target(args) is not None or args.plot or args.text:
            raise UsageError(
                "--target-size, --target-bpw, --plot and --text do not apply to a model "
                "rewritten in its own format; write GGUF or SafeTensors (-o model.gguf)"
            )
        return models.run_quantize(args)
    if args.threads:
        from bundler.codecs import set_threads

        set_threads(args.threads)
    if _target(args) is not None:
        affine = [
            f for f in ("bits", "group_size", "calibration", "scale_dtype") if getattr(args, f)
        ]
        affine += [f for f in ("per_channel", "asym") if getattr(args, f)]
        if affine:
            flags = ", ".join("--" + f.replace("_", "-") for f in affine)
            raise UsageError(f"{flags}: affine options do not combine with a size target")
        return _run(args, plan_options(args))
    return _run(args, {**plan_options(args), "type": affine_type(args)})


def _measuring(args: argparse.Namespace) -> bool:
    """True when --text asks for the importance matrix to be measured (checked against
    the options it excludes or needs)."""
    text = getattr(args, "text", None)
    if text is None:
        given = [f for f in ("ctx", "chunks", "llama_threads") if getattr(args, f, None)]
        if given:
            flags = ", ".join("--" + f.replace("_", "-") for f in given)
            raise UsageError(f"{flags} go(es) with --text")
        return False
    if getattr(args, "imatrix", None) is not None:
        raise UsageError("give --imatrix or --text (which measures one), not both")
    return True


def _target(args: argparse.Namespace):
    """The size target --target-size / --target-bpw ask for, or None."""
    size, bpw = getattr(args, "target_size", None), getattr(args, "target_bpw", None)
    if size is None and bpw is None:
        if getattr(args, "candidates", None):
            raise UsageError("--candidates needs --target-size or --target-bpw")
        return None
    from bundler.plan.target import SizeTarget

    return SizeTarget(size, bpw)


def affine_type(args: argparse.Namespace) -> str | None:
    """--type, with the affine flags (--bits, --group-size, --per-channel, --asym,
    --calibration, --scale-dtype) folded into its short string form."""
    from bundler.errors import UsageError
    from bundler.plan.affine import is_affine

    tokens = []
    if args.group_size is not None:
        tokens.append(f"g{args.group_size}")
    if args.per_channel:
        tokens.append("channel")
    if args.asym:
        tokens.append("asym")
    if args.calibration:
        tokens.append(args.calibration)
    if args.scale_dtype:
        tokens.append(args.scale_dtype)
    base = args.type
    if args.bits is not None:
        if base is not None and not (
            is_affine(base) and base.lower().startswith(f"int{args.bits}")
        ):
            raise UsageError(f"--bits {args.bits} contradicts --type {base}")
        base = base or f"int{args.bits}"
    if base is None:
        if tokens or getattr(args, "type_required", True):
            raise UsageError(
                "--type is required (or --bits for an affine codec, or --target-size / "
                "--target-bpw)"
            )
        return None
    if tokens and not is_affine(base):
        raise UsageError(
            f"--group-size, --per-channel, --asym, --calibration and --scale-dtype apply to "
            f"affine codecs (int8, int4, ...), not to {base}"
        )
    return ":".join([base, *tokens])


def run_convert(args: argparse.Namespace) -> int:
    return _run(args, None)
