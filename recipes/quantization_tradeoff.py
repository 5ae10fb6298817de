"""Every codec that can encode floats, on the same seeded weights: size against error.

The weights look like a transformer's: normal with a small scale, plus a few outliers per
row (the values that make low-bit codecs struggle). Each codec encodes them and decodes them
back; every encoding is bundled in one SafeTensors file, and the table gives bits per
weight, compression ratio against float32, RMSE, cosine similarity and signal-to-noise
ratio, sorted by size. Use it to pick a codec.

Run: python recipes/quantization_tradeoff.py   (or: bundler recipe run quantization_tradeoff)
"""

from __future__ import annotations

import numpy as np

import bundler
from bundler import Bundle, Tensor
from bundler.cli.recipe import script_main
from bundler.codecs import all_codecs
from bundler.errors import UsageError
from bundler.recipe import RecipeContext

ROWS, COLS = 32, 4096
OUTLIERS_PER_ROW = 4


def float_codecs() -> list[bundler.Codec]:
    """Codecs with kernels that take signed float input and give it back, smallest first.

    Integer dtypes refuse fractions, f8_e8m0 holds only positive powers of two, and f64
    spends more than float32; none of them is a way to shrink weights.
    """
    probe = np.linspace(-1, 1, 256, dtype=np.float32).reshape(1, 256)
    found = []
    for codec in all_codecs():
        if not codec.facts.has_kernels:
            continue
        try:
            back = codec.decode(codec.encode(probe), probe.shape)
        except UsageError:  # integer dtypes refuse fractions
            continue
        if codec.facts.bits_per_weight <= 32 and np.isfinite(back).all():
            found.append(codec)
    return sorted(found, key=lambda c: (c.facts.bits_per_weight, c.name))


def weights(ctx: RecipeContext) -> np.ndarray:
    w = ctx.rng.standard_normal((ROWS, COLS), dtype=np.float32) * np.float32(0.02)
    cols = ctx.rng.integers(0, COLS, size=(ROWS, OUTLIERS_PER_ROW))
    w[np.arange(ROWS)[:, None], cols] *= np.float32(25)
    return w


def run(ctx: RecipeContext) -> None:
    w = weights(ctx)
    ctx.metric("values", w.size)
    rows, stored = [], {}
    for codec in float_codecs():
        encoded = codec.encode(w)
        stored[f"weights.{codec.name}"] = Tensor.from_raw(
            f"weights.{codec.name}", w.shape, codec, encoded
        )
        stats = ctx.error_stats(codec.name, w, codec.decode(encoded, w.shape), encoded.size)
        ctx.metric(f"{codec.name}.bits_per_weight", 8.0 * encoded.size / w.size)
        rows.append(
            [
                codec.name,
                f"{8.0 * encoded.size / w.size:.3f}",
                f"{stats.compression_ratio:.2f}",
                f"{stats.rmse:.3e}",
                f"{stats.cosine:.6f}",
                f"{stats.snr_db:.2f}",
            ]
        )
    ctx.metric("codecs", len(rows))
    path = ctx.path("tradeoff.safetensors")
    Bundle(tensors=stored).save(path)
    ctx.output("safetensors", path)
    ctx.table(
        ["codec", "bits/weight", "ratio", "RMSE", "cosine", "SNR dB"],
        rows,
        title=f"{ROWS}x{COLS} seeded weights (normal, sigma 0.02, {OUTLIERS_PER_ROW} outliers "
        "per row at 25x)",
    )


if __name__ == "__main__":
    raise SystemExit(script_main(__file__))
