"""`bundler types`: every codec with its ids and sizes."""

from __future__ import annotations

import argparse

from bundler.cli.output import add_json_flag, emit, table


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "types",
        help="list every codec: name, GGML id, APR code, sizes, importance weights; or, with "
        "--file-types, llama.cpp's file types (--type presets)",
    )
    p.add_argument(
        "--file-types",
        action="store_true",
        help="list the file types instead: general.file_type, base codec, whether bundler "
        "writes it and whether llama-quantize needs an importance matrix for it",
    )
    add_json_flag(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from bundler.codecs import TABLE

    if args.file_types:
        emit(args, _file_type_rows(), _file_types_human)
        return 0

    rows = [
        {
            "name": f.name,
            "ggml_id": f.ggml_id,
            "apr_code": f.apr_code,
            "apr_native": f.apr_native,
            "safetensors_dtype": f.safetensors_dtype,
            "block_size": f.block_size,
            "type_size": f.type_size,
            "bits_per_weight": f.bits_per_weight,
            "encode": f.has_kernels,
            "importance": _importance(f),
            "description": f.description,
        }
        for f in TABLE
    ]
    rows += _affine_rows()
    emit(args, rows, _human)
    return 0


def _file_type_rows() -> list[dict]:
    """llama.cpp's file types in `general.file_type` order, with what the rules give a llama
    model of 256-wide rows: the codecs bundler cannot encode yet, and whether llama-quantize
    refuses it without an importance matrix."""
    from bundler.plan import FILE_TYPES
    from bundler.plan.filetypes import ALIASES
    from bundler.plan.writable import needs_matrix, pending_encoders

    aliases = {v: k for k, v in ALIASES.items()}
    return [
        {
            "name": f.name,
            "alias": aliases.get(f.name),
            "file_type": f.ftype,
            "base": f.base,
            "mixture": f.mixture,
            "needs_encoders": pending_encoders(f),
            "needs_imatrix": needs_matrix(f),
        }
        for f in sorted(FILE_TYPES, key=lambda f: f.ftype)
    ]


def _file_types_human(rows: list[dict]) -> str:
    body = [
        [
            r["name"] + (f" ({r['alias']})" if r["alias"] else ""),
            r["file_type"],
            r["base"],
            "mixture" if r["mixture"] else "-",
            "no: " + ", ".join(r["needs_encoders"]) if r["needs_encoders"] else "yes",
            "required" if r["needs_imatrix"] else "optional",
        ]
        for r in rows
    ]
    head = ["type", "file_type", "base", "rules", "writes", "imatrix"]
    note = (
        "\nwrites no: bundler has no encoder yet for the codecs named"
        "\nimatrix required: llama-quantize (and bundler) refuse it without --imatrix"
    )
    return table(body, head, "<><<<<") + note


def _affine_rows() -> list[dict]:
    """The affine family: one row per width; granularity, zero point, calibration and scale
    dtype are chosen in the name (int4:g128:asym:mse)."""
    from bundler.codecs.affine.scheme import MAX_BITS, MIN_BITS

    form = "[:tensor|:channel[N]|:g<G>][:sym|:asym][:minmax|:p99.9|:meanstd3|:mse|:entropy]"
    return [
        {
            "name": f"int{bits}",
            "ggml_id": None,
            "apr_code": None,
            "apr_native": False,
            "safetensors_dtype": "I32" if bits < 8 else "I8" if bits == 8 else "I16",
            "block_size": 1,
            "type_size": bits / 8,
            "bits_per_weight": float(bits),
            "encode": True,
            "importance": None,
            "description": f"affine int{bits}{form}[:f16|:bf16], codes + scales",
        }
        for bits in (2, 3, 4, 8, 16)
        if MIN_BITS <= bits <= MAX_BITS
    ]


def _importance(facts) -> str | None:
    """How encode treats importance weights (an importance-matrix row): "requires" them
    (ggml quantizes only with them), "takes" them (ggml's weighted quantizer), "ignores"
    them (as ggml does), or None (refuses them)."""
    if facts.requires_importance:
        return "requires"
    if facts.takes_importance:
        return "takes"
    return "ignores" if facts.ignores_importance else None


#: The encode column of a codec with kernels, by how it treats importance weights.
_ENCODE = {"takes": "weighted", "requires": "imatrix"}


def _dash(v: object) -> str:
    return "-" if v is None else str(v)


def _human(rows: list[dict]) -> str:
    body = [
        [
            r["name"],
            _dash(r["ggml_id"]),
            _dash(r["apr_code"]) + ("" if r["apr_native"] or r["apr_code"] is None else "*"),
            _dash(r["safetensors_dtype"]),
            r["block_size"],
            r["type_size"],
            f"{r['bits_per_weight']:.4g}",
            _ENCODE.get(r["importance"], "yes") if r["encode"] else "store",
            r["description"],
        ]
        for r in rows
    ]
    head = ["name", "ggml", "apr", "safetensors", "block", "bytes", "bpw", "encode", "what"]
    note = (
        "\n* APR code of this project's extension (aprender cannot read it)"
        "\nweighted: also encodes with an importance matrix (llama-quantize --imatrix)"
        "\nimatrix: encodes only with an importance matrix (as ggml)"
    )
    return table(body, head, "<>><>>><<") + note
