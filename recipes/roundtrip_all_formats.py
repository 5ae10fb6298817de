"""One bundle through every pair of formats (GGUF, SafeTensors, APR), byte-identical.

A seeded bundle with typed metadata and tensors of eight codecs (floats, integers, legacy
blocks and K-quants) is written directly in each format. Then, for every ordered pair A -> B,
the A file is converted to B and back to A: the B file equals the one written directly and
the file back equals the original A file, byte for byte. SafeTensors has no block dtypes or
typed metadata and APR lacks codes for some GGML types; formats/ documents the conventions
that make the round trips exact anyway.

Run: python recipes/roundtrip_all_formats.py   (or: bundler recipe run roundtrip_all_formats)
"""

from __future__ import annotations

import itertools
import warnings

import numpy as np

import bundler
from bundler import Bundle, Metadata, Tensor, Value, ValueType
from bundler.cli.recipe import script_main
from bundler.recipe import RecipeContext, sha256_file

FORMATS = {"gguf": ".gguf", "safetensors": ".safetensors", "apr": ".apr"}
#: name -> (shape, codec)
TENSORS = {
    "embed.weight": ((64, 256), "q4_k"),
    "blk.0.attn.weight": ((256, 256), "q6_k"),
    "blk.0.ffn_up.weight": ((128, 256), "q4_0"),
    "blk.0.ffn_down.weight": ((256, 128), "q8_0"),
    "blk.0.proj.weight": ((32, 64), "bf16"),
    "blk.0.gate.weight": ((32, 64), "f16"),
    "blk.0.norm.weight": ((256,), "f32"),
    "positions": ((64,), "i32"),
}


def make_bundle(ctx: RecipeContext) -> Bundle:
    metadata = Metadata()
    metadata["general.name"] = "roundtrip"
    metadata.set("example.layers", 1, ValueType.UINT32)
    metadata.set("example.eps", 2.0**-17, ValueType.FLOAT32)  # a float32 value
    metadata.set("example.rope_scale", 0.5, ValueType.FLOAT64)
    metadata.set("example.tied", True, ValueType.BOOL)
    metadata["example.tokens"] = Value(ValueType.ARRAY, ["<s>", "</s>", "hello"], ValueType.STRING)
    bundle = Bundle(metadata)
    for name, (shape, codec) in TENSORS.items():
        if codec == "i32":
            values = np.arange(np.prod(shape), dtype=np.int32).reshape(shape)
        else:
            values = ctx.rng.standard_normal(shape, dtype=np.float32)
        bundle.add(Tensor.from_array(name, values, codec))
    return bundle


def run(ctx: RecipeContext) -> None:
    bundle = make_bundle(ctx)
    direct = {}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # APR extension codes: this recipe reads its own files
        for fmt, ext in FORMATS.items():
            direct[fmt] = ctx.path(f"direct{ext}")
            bundle.save(direct[fmt])
            ctx.output(f"direct.{fmt}", direct[fmt])
        rows, failures = [], 0
        for a, b in itertools.permutations(FORMATS, 2):
            via = ctx.path(f"{a}_to_{b}{FORMATS[b]}")
            back = ctx.path(f"{a}_to_{b}_to_{a}{FORMATS[a]}")
            bundler.convert(direct[a], via)
            bundler.convert(via, back)
            same_as_direct = sha256_file(via) == sha256_file(direct[b])
            identical = sha256_file(back) == sha256_file(direct[a])
            ctx.metric(f"{a}_to_{b}.same_as_direct", same_as_direct)
            ctx.metric(f"{a}_to_{b}_to_{a}.identical", identical)
            failures += (not same_as_direct) + (not identical)
            rows.append([f"{a} -> {b} -> {a}", same_as_direct, identical])

    for fmt, path in direct.items():
        read = bundler.open(path)
        same_tensors = all(
            read.tensors[n].codec == t.codec
            and read.tensors[n].raw().tobytes() == t.raw().tobytes()
            for n, t in bundle.tensors.items()
        )
        ctx.metric(f"direct.{fmt}.tensors_identical", same_tensors)
        ctx.metric(f"direct.{fmt}.metadata_identical", read.metadata == bundle.metadata)
    ctx.metric("pairs", len(rows))
    ctx.metric("failures", failures)
    ctx.table(
        ["round trip", "B equals direct write", "back equals original"],
        rows,
        title=f"{len(bundle.tensors)} tensors of {len(set(c for _, c in TENSORS.values()))} "
        f"codecs, {len(bundle.metadata)} typed metadata keys",
    )
    ctx.say(f"{len(rows)} ordered format pairs, {failures} differences.")


if __name__ == "__main__":
    raise SystemExit(script_main(__file__))
