"""`bundler vectors quantize` and `bundler vectors eval`: embedding vectors per scheme."""

from __future__ import annotations

import argparse
import os
import time
from typing import Any

from bundler.cli.output import add_json_flag, emit, table

SCHEMES = ("qint8", "qint4", "binary", "fp16")  # Scheme's values, without loading the codecs
#: eval's names of QInt8 / QInt4 with per-dimension ranges (bundler's option)
DIMS_SCHEMES = ("qint8-dims", "qint4-dims")


def _fraction(text: str) -> float:
    value = float(text)
    if not 0.0 < value <= 1.0:
        raise argparse.ArgumentTypeError(f"must be in (0, 1], got {text}")
    return value


def _positive(text: str) -> int:
    value = int(text)
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be positive, got {text}")
    return value


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("vectors", help="quantize embedding vectors per vector, evaluate schemes")
    jobs = p.add_subparsers(dest="vectors", metavar="JOB", required=True)

    q = jobs.add_parser("quantize", help="quantize a .npy matrix or a bundle tensor of vectors")
    q.add_argument("input", help=".npy file, or a GGUF/SafeTensors/APR file with --tensor")
    q.add_argument("-o", "--output", required=True, help="bundle (.gguf/.safetensors/.apr) or .bvq")
    q.add_argument("--scheme", required=True, choices=(*SCHEMES, "auto"))
    q.add_argument(
        "--target-cosine", type=_fraction, default=0.99,
        help="with --scheme auto: the cosine every vector keeps (default 0.99)",
    )  # fmt: skip
    q.add_argument(
        "--per", choices=("vector", "collection"), default="vector",
        help="with --scheme auto: choose a scheme per vector or one for all (worst cosine)",
    )  # fmt: skip
    q.add_argument(
        "--ranges", choices=("vector", "dimension"), default="vector",
        help="qint8/qint4: a min and step per vector (lnmp-quant's) or per dimension for the "
        "whole collection (bundler's option, no per-vector field; bundle outputs only)",
    )  # fmt: skip
    q.add_argument("--tensor", help="the 2-D tensor of a bundle input (one vector per row)")
    q.add_argument("--name", help="collection name in the output bundle (default: the tensor's)")
    q.add_argument("--force", action="store_true", help="overwrite an existing output")
    add_json_flag(q)
    q.set_defaults(func=run_quantize)

    e = jobs.add_parser("eval", help="bytes, cosine, recall@k and time of every scheme")
    e.add_argument("input", help=".npy file, or a GGUF/SafeTensors/APR file with --tensor")
    e.add_argument("--tensor", help="the 2-D tensor of a bundle input")
    e.add_argument(
        "--schemes", default=",".join(SCHEMES),
        help=f"comma-separated schemes, of {', '.join(SCHEMES + DIMS_SCHEMES)} (the -dims ones: "
        "per-dimension ranges)",
    )  # fmt: skip
    e.add_argument("--queries", type=_positive, default=100, help="sampled query vectors")
    e.add_argument("-k", type=_positive, default=10, help="neighbours per query for recall@k")
    e.add_argument("--metric", choices=("cosine", "dot"), default="cosine")
    add_json_flag(e)
    e.set_defaults(func=run_eval)


def run_quantize(args: argparse.Namespace) -> int:
    from bundler.codecs.vectors import dequantize, quantize_dims, quantize_to_target
    from bundler.codecs.vectors.files import output_format, read_vectors, write_collection
    from bundler.codecs.vectors.schemes import Scheme, check_finite, cosine, quantize_matrix
    from bundler.errors import UsageError
    from bundler.pipeline import _check_paths

    _check_paths(args.input, args.output, args.force)
    dims = args.ranges == "dimension"
    if dims and args.scheme not in ("qint8", "qint4"):
        raise UsageError(f"--ranges dimension applies to qint8 and qint4, not {args.scheme}")
    output_format(args.output, args.scheme == "auto", dims)  # refused before any work
    x = read_vectors(args.input, args.tensor)
    check_finite(x)
    start = time.perf_counter()
    result: dict[str, Any] = {}
    if args.scheme == "auto":
        q, report = quantize_to_target(x, args.target_cosine, per=args.per)
        result.update(report.as_dict())
        stored = q.stored_size()
        result["scheme"] = "auto"
    else:
        if dims:
            q = quantize_dims(x, args.scheme)
            cos = cosine(x, q.dequantize())
        else:
            q = quantize_matrix(x, Scheme.parse(args.scheme))
            cos = cosine(x, dequantize(q))
        stored = q.stored_size()
        result.update(
            scheme=q.scheme.value, mean_cosine=float(cos.mean()), min_cosine=float(cos.min())
        )
    result["ranges"] = args.ranges
    seconds = time.perf_counter() - start
    name = args.name or args.tensor or "vectors"
    fmt = write_collection(q, args.output, name, force=args.force)
    result.update(
        input=args.input, tensor=args.tensor, output=args.output, format=fmt, collection=name,
        vectors=int(x.shape[0]), dim=int(x.shape[1]), float32_bytes=int(x.nbytes),
        stored_bytes=int(stored), compression=x.nbytes / stored, seconds=seconds,
        output_bytes=os.path.getsize(args.output),
    )  # fmt: skip
    emit(args, result, _quantize_human)
    return 0


def _quantize_human(r: dict[str, Any]) -> str:
    what = r["scheme"]
    if what == "auto":
        mix = ", ".join(f"{k} {v}" for k, v in r["mix"].items() if v)
        what = f"auto (cosine >= {r['target_cosine']} per {r['per']}: {mix})"
    return (
        f"{r['vectors']} vectors of {r['dim']} -> {r['output']} ({r['format']}, "
        f"collection {r['collection']!r})\n"
        f"scheme {what}{', per-dimension ranges' if r['ranges'] == 'dimension' else ''}\n"
        f"{r['float32_bytes']:,} float32 bytes -> {r['stored_bytes']:,} stored "
        f"({r['compression']:.2f}x); cosine mean {r['mean_cosine']:.6f}, "
        f"worst {r['min_cosine']:.6f}"
    )


def run_eval(args: argparse.Namespace) -> int:
    from bundler.codecs.vectors.evaluate import evaluate
    from bundler.codecs.vectors.files import read_vectors
    from bundler.codecs.vectors.schemes import Scheme

    names = [s.strip().lower() for s in args.schemes.split(",") if s.strip()]
    schemes = [s if s in DIMS_SCHEMES else Scheme.parse(s) for s in names]
    x = read_vectors(args.input, args.tensor)
    reports = evaluate(x, schemes, queries=args.queries, k=args.k, metric=args.metric)
    data = {
        "input": args.input,
        "tensor": args.tensor,
        "vectors": int(x.shape[0]),
        "dim": int(x.shape[1]),
        "queries": min(args.queries, int(x.shape[0])),
        "k": args.k,
        "metric": args.metric,
        "schemes": [r.as_dict() for r in reports],
    }
    emit(args, data, _eval_human)
    return 0


def _eval_human(d: dict[str, Any]) -> str:
    k = d["k"]
    rows = [
        [
            r["scheme"], f"{r['stored_bytes']:,}", f"{r['compression']:.2f}x",
            f"{r['mean_cosine']:.6f}", f"{r['min_cosine']:.6f}", f"{r['recall_at_k']:.4f}",
            f"{r['encode_seconds'] * 1e3:.1f}", f"{r['decode_seconds'] * 1e3:.1f}",
        ]
        for r in d["schemes"]
    ]  # fmt: skip
    head = [
        "scheme", "bytes", "compression", "mean cosine", "worst cosine", f"recall@{k}",
        "encode ms", "decode ms",
    ]  # fmt: skip
    title = (
        f"{d['vectors']} vectors of {d['dim']}; recall@{k} of {d['queries']} queries "
        f"({d['metric']}) against float32 exact search"
    )
    return title + "\n" + table(rows, head, "<>>>>>>>")
