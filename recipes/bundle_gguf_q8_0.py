"""Seeded weights with typed metadata quantized to Q8_0 and bundled as GGUF.

The export-pipeline case: a dict of float32 arrays plus metadata becomes a GGUF file that
llama.cpp loads. The recipe reads the file back with the `gguf` package (llama.cpp's own
Python reader) as well as with bundler, and reports size, ratio and the error of each tensor.

Run: python recipes/bundle_gguf_q8_0.py   (or: bundler recipe run bundle_gguf_q8_0)
"""

from __future__ import annotations

import numpy as np
from gguf import GGUFReader

import bundler
from bundler.cli.recipe import script_main
from bundler.recipe import RecipeContext

SHAPES = {
    "token_embd.weight": (512, 128),
    "blk.0.attn_q.weight": (128, 128),
    "blk.0.ffn_up.weight": (384, 128),
    "blk.0.ffn_down.weight": (128, 384),
    "blk.0.ffn_norm.weight": (128,),
}
METADATA = {
    "general.architecture": "example",
    "general.name": "seeded-q8",
    "example.block_count": bundler.Value(bundler.ValueType.UINT32, 1),
    "example.embedding_length": bundler.Value(bundler.ValueType.UINT32, 128),
}


def run(ctx: RecipeContext) -> None:
    weights = {
        name: ctx.rng.standard_normal(shape, dtype=np.float32) * np.float32(0.05)
        for name, shape in SHAPES.items()
    }
    path = ctx.path("model-q8_0.gguf")
    report = bundler.save(weights, path, METADATA, codec="q8_0", pure=True)
    ctx.output("gguf", path)

    bundle = bundler.open(path)
    reader = GGUFReader(path)
    oracle = {t.name: t for t in reader.tensors}
    rows = []
    for name, original in weights.items():
        tensor = bundle.tensors[name]
        ctx.metric(f"{name}.codec", tensor.codec.name)
        raw_equal = bytes(oracle[name].data.tobytes()) == tensor.raw().tobytes()
        ctx.metric(f"{name}.gguf_reader_bytes_equal", raw_equal)
        stats = ctx.error_stats(name, original, tensor.numpy(), tensor.nbytes)
        rows.append([name, tensor.codec.name, tensor.nbytes, f"{stats.rmse:.3e}", raw_equal])
    float32_bytes = sum(w.nbytes for w in weights.values())
    ctx.metric("tensors", len(bundle.tensors))
    ctx.metric("gguf_reader_tensors", len(reader.tensors))
    ctx.metric("metadata_keys", len(bundle.metadata))
    ctx.metric("file_type", str(report.plan.file_type.name if report.plan.file_type else None))
    ctx.metric("float32_bytes", float32_bytes)
    ctx.metric("ratio", float32_bytes / path.stat().st_size)

    ctx.table(
        ["tensor", "codec", "bytes", "rmse", "gguf reader agrees"], rows, title=f"wrote {path.name}"
    )
    ctx.say(
        f"{float32_bytes:,} bytes of float32 -> {path.stat().st_size:,} bytes of GGUF "
        f"(ratio {float32_bytes / path.stat().st_size:.2f}); the gguf package reads "
        f"{len(reader.tensors)} tensors with the same bytes."
    )


if __name__ == "__main__":
    raise SystemExit(script_main(__file__))
