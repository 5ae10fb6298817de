"""A batch of seeded embedding vectors through every codec: how much similarity survives.

The embedding use case: 384 unit-length vectors of 768 dimensions (a sentence-embedding
model's output size) stored with each codec. For each codec the recipe reports the cosine
similarity between every vector and its decoded copy (mean and worst) and how often a
nearest-neighbour search over the decoded vectors finds the same neighbour as over the
originals. All the encodings are bundled in one SafeTensors file. Every dot product is
summed exactly, so the figures are the same on every machine.

Run: python recipes/quantize_embeddings.py   (or: bundler recipe run quantize_embeddings)
"""

from __future__ import annotations

import importlib.util
import math
from pathlib import Path

import numpy as np

from bundler import Bundle, Tensor
from bundler.cli.recipe import script_main
from bundler.recipe import RecipeContext

COUNT, DIM, QUERIES = 384, 768, 24


def _float_codecs():
    """The codecs of the quantization_tradeoff recipe beside this one."""
    path = Path(__file__).with_name("quantization_tradeoff.py")
    spec = importlib.util.spec_from_file_location("_quantization_tradeoff", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.float_codecs()


def embeddings(ctx: RecipeContext) -> np.ndarray:
    """Unit vectors with a few shared directions, so that neighbours are meaningful."""
    topics = ctx.rng.standard_normal((16, DIM))
    mix = ctx.rng.standard_normal((COUNT, 16)) ** 3
    v = mix @ topics + 0.5 * ctx.rng.standard_normal((COUNT, DIM))
    v /= np.sqrt((v * v).sum(axis=1, keepdims=True))
    return v.astype(np.float32)


def row_sums(a: np.ndarray, b: np.ndarray) -> list[float]:
    """The exact dot product of each row of `a` with the same row of `b`."""
    products = a.astype(np.float64) * b.astype(np.float64)
    return [math.fsum(row) for row in products.tolist()]


def exact_dot(a: np.ndarray, b: np.ndarray) -> float:
    """a . b with float64 products (exact for float32 inputs) and an exactly rounded sum."""
    return math.fsum((a.astype(np.float64) * b.astype(np.float64)).tolist())


#: Far above the rounding error of a float64 dot product of two near-unit vectors of DIM
#: values (DIM * 2^-53 * |a| |b|, about 1e-13): scores closer than this are compared exactly.
SLACK = 1e-9


def nearest(vectors: np.ndarray, query: int) -> int:
    """The index of the vector most similar to vectors[query] (not itself); the first on ties.

    Scores come from a float64 matrix product; the candidates within SLACK of the best are
    compared again with exact dot products, so the answer is the exact one on any machine.
    """
    scores = vectors.astype(np.float64) @ vectors[query].astype(np.float64)
    scores[query] = -math.inf
    close = np.flatnonzero(scores >= scores.max() - SLACK)
    if len(close) == 1:
        return int(close[0])
    exact = [exact_dot(vectors[query], vectors[i]) for i in close]
    return int(close[exact.index(max(exact))])


def run(ctx: RecipeContext) -> None:
    v = embeddings(ctx)
    queries = ctx.rng.choice(COUNT, size=QUERIES, replace=False)
    truth = [nearest(v, int(q)) for q in queries]
    ctx.metric("vectors", COUNT)
    ctx.metric("dimensions", DIM)
    ctx.metric("queries", QUERIES)
    v_norms = row_sums(v, v)
    rows, stored = [], {}
    for codec in _float_codecs():
        encoded = codec.encode(v)
        stored[f"embeddings.{codec.name}"] = Tensor.from_raw(
            f"embeddings.{codec.name}", v.shape, codec, encoded
        )
        d = codec.decode(encoded, v.shape)
        cosines = [
            dot / math.sqrt(vv) / math.sqrt(dd)
            for dot, vv, dd in zip(row_sums(v, d), v_norms, row_sums(d, d), strict=True)
        ]
        same = sum(nearest(d, int(q)) == t for q, t in zip(queries, truth, strict=True))
        mean = math.fsum(cosines) / COUNT
        bpw = 8.0 * encoded.size / v.size
        ctx.metric(f"{codec.name}.bits_per_weight", bpw)
        ctx.metric(f"{codec.name}.mean_cosine", mean)
        ctx.metric(f"{codec.name}.min_cosine", min(cosines))
        ctx.metric(f"{codec.name}.same_nearest_neighbour", same)
        rows.append([codec.name, f"{bpw:.3f}", f"{mean:.6f}", f"{min(cosines):.6f}", same])
    path = ctx.path("embeddings.safetensors")
    Bundle(tensors=stored).save(path)
    ctx.output("safetensors", path)
    ctx.table(
        ["codec", "bits/value", "mean cosine", "worst cosine", f"same neighbour (of {QUERIES})"],
        rows,
        title=f"{COUNT} unit embeddings of {DIM} dimensions",
    )


if __name__ == "__main__":
    raise SystemExit(script_main(__file__))
