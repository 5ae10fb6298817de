"""Seeded weights quantized to Q4_0 and bundled as APR, with real half scales.

The classic cookbook recipe, done right: every Q4_0 block stores its scale as an IEEE half
(d = signed max / -8, rounded to nearest even), not the first two bytes of a float32. The
recipe checks that each stored scale is that half, reports the file size, the compression
ratio against float32 and the mean squared error of every tensor.

Run: python recipes/bundle_apr_quantized_q4.py   (or: bundler recipe run bundle_apr_quantized_q4)
"""

from __future__ import annotations

import warnings

import numpy as np

import bundler
from bundler.cli.recipe import script_main
from bundler.recipe import RecipeContext

#: name -> shape of the weights, in the naming style of a small transformer
SHAPES = {
    "blk.0.attn_q.weight": (256, 256),
    "blk.0.attn_k.weight": (256, 256),
    "blk.0.ffn_up.weight": (512, 256),
    "blk.0.ffn_down.weight": (256, 512),
    "blk.0.attn_norm.weight": (256,),
}


def reference_scales(weights: np.ndarray) -> np.ndarray:
    """The half scale GGML's Q4_0 stores per block: the signed max over -8, as float16."""
    blocks = weights.reshape(-1, 32)
    signed_max = blocks[np.arange(len(blocks)), np.abs(blocks).argmax(axis=1)]
    return (signed_max / np.float32(-8)).astype(np.float16)


def run(ctx: RecipeContext) -> None:
    weights = {
        name: (ctx.rng.standard_normal(shape, dtype=np.float32) * np.float32(0.02))
        for name, shape in SHAPES.items()
    }
    path = ctx.path("model-q4_0.apr")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        bundler.save(weights, path, {"general.name": "seeded-q4"}, codec="q4_0")
    ctx.output("apr", path)

    bundle = bundler.open(path)
    rows, total_blocks, reference_blocks, mse_sum = [], 0, 0, 0.0
    for name, original in weights.items():
        tensor = bundle.tensors[name]
        ctx.metric(f"{name}.codec", tensor.codec.name)
        stats = ctx.error_stats(name, original, tensor.numpy(), tensor.nbytes)
        if tensor.codec.name == "q4_0":
            blocks = tensor.raw().reshape(-1, tensor.codec.facts.type_size)
            stored = blocks[:, :2].copy().view("<f2").reshape(-1)
            total_blocks += len(stored)
            reference_blocks += int((stored == reference_scales(original)).sum())
            mse_sum += stats.rmse**2
        rows.append([name, tensor.codec.name, tensor.nbytes, f"{stats.rmse**2:.3e}"])
    float32_bytes = sum(w.nbytes for w in weights.values())
    apr_bytes = path.stat().st_size
    ctx.metric("tensors", len(bundle.tensors))
    ctx.metric("float32_bytes", float32_bytes)
    ctx.metric("ratio", float32_bytes / apr_bytes)
    ctx.metric("q4_0_blocks", total_blocks)
    ctx.metric("q4_0_blocks_with_reference_half_scale", reference_blocks)
    ctx.metric(
        "q4_0_mean_mse", mse_sum / sum(t.codec.name == "q4_0" for t in bundle.tensors.values())
    )
    ctx.metric("apr_code", bundle.tensors["blk.0.attn_q.weight"].codec.facts.apr_code)
    ctx.metric("aprender_compatibility_warnings", len(caught))

    ctx.table(["tensor", "codec", "bytes", "mse"], rows, title=f"wrote {path.name}")
    ctx.say(
        f"{float32_bytes:,} bytes of float32 -> {apr_bytes:,} bytes of APR "
        f"(ratio {float32_bytes / apr_bytes:.2f}); {reference_blocks}/{total_blocks} Q4_0 "
        "blocks store the reference half scale.\nQ4_0 has APR code 66, this project's "
        "extension (aprender cannot read it); use apr_q4 or q4_k for a file aprender reads."
    )


if __name__ == "__main__":
    raise SystemExit(script_main(__file__))
