"""`bundler bench`: benchmarks side by side with the reference implementations."""

from __future__ import annotations

import argparse

from bundler.cli import coldstart
from bundler.cli.output import add_json_flag, emit, positive_int, positive_ints


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("bench", help="measure speed and memory beside the reference tools")
    kinds = p.add_subparsers(dest="bench", metavar="BENCH", required=True)
    c = kinds.add_parser("codecs", help="encode/decode throughput per codec vs the gguf package")
    c.add_argument(
        "--codecs", default=None, help="comma-separated codec names (default: all legacy)"
    )
    c.add_argument("--rows", type=positive_int, default=4096, help="rows of the input matrix")
    c.add_argument("--cols", type=positive_int, default=4096, help="columns of the input matrix")
    c.add_argument(
        "--threads",
        type=positive_ints,
        default=None,
        help="comma-separated thread counts (default: 1 and all cores)",
    )
    c.add_argument(
        "--repeat", type=positive_int, default=5, help="timed runs per measurement (median)"
    )
    c.add_argument(
        "--affine", action="store_true",
        help="the affine codecs (int8/int4, calibrations) beside onnxruntime's weight quantizers",
    )  # fmt: skip
    c.add_argument(
        "--weighted", action="store_true",
        help="also the weighted encoders (an importance row, as with llama-quantize --imatrix) "
        "beside the C library given the same row",
    )  # fmt: skip
    add_json_flag(c)
    c.set_defaults(func=_run_codecs)
    k = kinds.add_parser("containers", help="open and rewrite model files vs the reference readers")
    k.add_argument(
        "--size-gib", type=float, default=2.0, help="size of the generated rewrite input"
    )
    add_json_flag(k)
    k.set_defaults(func=_run_containers)
    v = kinds.add_parser(
        "convert",
        help="whole conversions vs llama-quantize (float32 GGUF -> Q8_0/Q4_0/Q4_K_M) and vs "
        "the gguf package's path (float32 SafeTensors -> Q4_0)",
    )
    v.add_argument("--size-gib", type=float, default=1.0, help="size of the generated models")
    v.add_argument(
        "--repeat",
        type=positive_int,
        default=3,
        help="runs of each converter, alternating (best kept)",
    )
    v.add_argument(
        "--against",
        type=_names,
        default="llama-quantize,gguf",
        help="comma-separated comparisons: llama-quantize, gguf (default: both)",
    )
    v.add_argument(
        "--models",
        type=_names,
        default="smollm2,llama",
        help="models converted against llama-quantize: smollm2 (SmolLM2-135M as float32), "
        "llama (a generated llama-shaped model of --size-gib) (default: both)",
    )
    v.add_argument(
        "--types",
        type=_names,
        default="Q8_0,Q4_0,Q4_K_M",
        help="file types converted against llama-quantize (default: Q8_0,Q4_0,Q4_K_M)",
    )
    v.add_argument(
        "--threads",
        type=positive_int,
        default=None,
        help="threads of both tools (default: all cores)",
    )
    v.add_argument(
        "--llama-quantize",
        metavar="PATH",
        default=None,
        help="the llama-quantize executable (default: the -O3 reference build, "
        "`python -m tools.reference.llama_quantize_o3`)",
    )
    v.add_argument("--keep", action="store_true", help="keep the generated and converted files")
    add_json_flag(v)
    v.set_defaults(func=_run_convert)
    coldstart.add_bench_parser(kinds)
    e = kinds.add_parser(
        "vectors", help="per-vector schemes: encode/decode time vs faiss and lnmp-quant's figures"
    )
    e.add_argument(
        "--vectors",
        type=positive_int,
        nargs="+",
        default=[256, 10_000],
        metavar="N",
        help="vectors in each batch measured (default 256, which stays in one core's cache, "
        "and 10000, which goes through memory)",
    )
    e.add_argument("--dim", type=positive_int, default=512, help="values per vector")
    e.add_argument(
        "--repeat", type=positive_int, default=50, help="timed runs per measurement (median)"
    )
    add_json_flag(e)
    e.set_defaults(func=_run_vectors)
    h = kinds.add_parser(
        "hostile", help="parse time and memory of headers built to amplify work (issue 18)"
    )
    h.add_argument("--cases", default=None, help="comma-separated case names (default: all)")
    h.add_argument(
        "--scale", type=float, default=1.0, help="fraction of the issue's counts to generate"
    )
    add_json_flag(h)
    h.set_defaults(func=_run_hostile)
    o = kinds.add_parser(
        "onnx", help="ONNX weight quantization vs ONNX Runtime's quantize_dynamic and 4-bit"
    )
    o.add_argument(
        "--repeat", type=positive_int, default=3, help="runs of each quantizer (best kept)"
    )
    add_json_flag(o)
    o.set_defaults(func=_run_onnx)


def _run_onnx(args: argparse.Namespace) -> int:
    from bundler.bench.onnx import run
    from bundler.cli.bench.onnx import human

    emit(args, run(args.repeat), human)
    return 0


def _run_codecs(args: argparse.Namespace) -> int:
    if args.affine:
        from bundler.bench.affine import human as affine_human
        from bundler.bench.affine import run as affine_run

        emit(args, affine_run(args), affine_human)
        return 0
    from bundler.bench.codecs import run
    from bundler.cli.bench.codecs import human

    report = run(args.codecs, args.rows, args.cols, args.threads, args.repeat, args.weighted)
    emit(args, report, human)
    return 0


def _run_containers(args: argparse.Namespace) -> int:
    from bundler.bench.containers import run
    from bundler.cli.bench.containers import human

    emit(args, run(args.size_gib), human)
    return 0


def _names(text: str) -> tuple[str, ...]:
    return tuple(n.strip() for n in text.split(",") if n.strip())


def _run_convert(args: argparse.Namespace) -> int:
    """Exit 1 when the outputs of two converters differ."""
    from bundler.bench.convert import all_outputs_equal, run
    from bundler.cli.bench.convert import human

    result = run(
        args.size_gib,
        keep=args.keep,
        repeat=args.repeat,
        against=args.against,
        models=args.models,
        types=args.types,
        threads=args.threads,
        llama_quantize=args.llama_quantize,
    )
    emit(args, result, human)
    return 0 if all_outputs_equal(result) else 1


def _run_vectors(args: argparse.Namespace) -> int:
    from bundler.bench.vectors import human, run

    emit(args, run(args), human)
    return 0


def _run_hostile(args: argparse.Namespace) -> int:
    from bundler.bench.hostile import CASES, run
    from bundler.cli.bench.hostile import human

    cases = args.cases.split(",") if args.cases else list(CASES)
    emit(args, {"cases": run(cases, args.scale)}, human)
    return 0
