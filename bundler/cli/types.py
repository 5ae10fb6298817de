"""`bundler types`: every codec with its ids and sizes."""

from __future__ import annotations

import argparse

from bundler.cli.output import add_json_flag, emit, table


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("types", help="list every codec: name, GGML id, APR code, sizes")
    add_json_flag(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from bundler.codecs import TABLE

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
            "description": f.description,
        }
        for f in TABLE
    ]
    emit(args, rows, _human)
    return 0


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
            "yes" if r["encode"] else "store",
            r["description"],
        ]
        for r in rows
    ]
    head = ["name", "ggml", "apr", "safetensors", "block", "bytes", "bpw", "encode", "what"]
    note = "\n* APR code of this project's extension (aprender cannot read it)"
    return table(body, head, "<>><>>><<") + note
