"""Seeded float32 weights stored as F16 SafeTensors, read back by the reference package.

Half precision keeps 11 significant bits: every value comes back within half an f16 step
(2^-11 of its magnitude) and the matrices take half the bytes. Biases and norms (1-D) stay
float32, as llama.cpp's rules keep them. The `safetensors` package's own
loader reads the file and gets exactly the values bundler decodes.

Run: python recipes/bundle_safetensors_f16.py   (or: bundler recipe run bundle_safetensors_f16)
"""

from __future__ import annotations

import numpy as np
from safetensors.numpy import load_file

import bundler
from bundler.cli.recipe import script_main
from bundler.recipe import RecipeContext

SHAPES = {
    "encoder.layer.0.attention.self.query.weight": (384, 384),
    "encoder.layer.0.attention.self.query.bias": (384,),
    "encoder.layer.0.intermediate.dense.weight": (1536, 384),
    "encoder.layer.0.output.LayerNorm.weight": (384,),
}


def run(ctx: RecipeContext) -> None:
    weights = {
        name: ctx.rng.standard_normal(shape, dtype=np.float32) * np.float32(0.04)
        for name, shape in SHAPES.items()
    }
    path = ctx.path("model-f16.safetensors")
    bundler.save(weights, path, codec="f16", pure=True)
    ctx.output("safetensors", path)

    bundle = bundler.open(path)
    reference = load_file(str(path))
    rows, within = [], 0
    for name, original in weights.items():
        tensor = bundle.tensors[name]
        decoded = tensor.numpy()
        ctx.metric(f"{name}.codec", tensor.codec.name)
        same = bool(np.array_equal(reference[name].astype(np.float32), decoded))
        ctx.metric(f"{name}.reference_reader_equal", same)
        stats = ctx.error_stats(name, original, decoded, tensor.nbytes)
        bound = np.abs(original.astype(np.float64)) * 2.0**-11 + 2.0**-25
        ok = bool((np.abs(original.astype(np.float64) - decoded) <= bound).all())
        within += ok
        rows.append([name, tensor.codec.name, tensor.nbytes, f"{stats.max_abs:.3e}", same])
    float32_bytes = sum(w.nbytes for w in weights.values())
    ctx.metric("tensors", len(bundle.tensors))
    ctx.metric("tensors_within_half_an_f16_step", within)
    ctx.metric("float32_bytes", float32_bytes)
    ctx.metric("ratio", float32_bytes / path.stat().st_size)
    ctx.table(
        ["tensor", "codec", "bytes", "max error", "reference reader agrees"],
        rows,
        title=f"wrote {path.name}",
    )
    ctx.say(
        f"{float32_bytes:,} bytes of float32 -> {path.stat().st_size:,} bytes of SafeTensors; "
        f"{within}/{len(weights)} tensors within half an f16 step of the original."
    )


if __name__ == "__main__":
    raise SystemExit(script_main(__file__))
