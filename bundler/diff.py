"""`diff`: how far two bundles of any formats are apart, tensor by tensor (matched by name),
and how their metadata differs.

Each common tensor is decoded on both sides, one tensor at a time, and compared with
`bundler.stats.error_stats` (A is the original, B the approximation). Affine-quantized
weights (compressed-tensors layout) are compared as the one float `<m>.weight` they decode
to, so a quantized file diffs against its source.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable
from typing import Any

from bundler.bundle import Bundle, Tensor
from bundler.errors import BundlerError
from bundler.inspection import describe_value
from bundler.stats import error_stats


def compare_tensors(a: Tensor, b: Tensor) -> dict[str, Any]:
    """One row of the diff: codecs, shape and, when both decode, the error figures."""
    row: dict[str, Any] = {
        "name": a.name,
        "shape": list(a.shape),
        "codec_a": a.codec.name,
        "codec_b": b.codec.name,
        "rmse": None,
        "cosine": None,
        "max_abs": None,
        "snr_db": None,
        "error": None,
    }
    try:
        stats = error_stats(a.numpy(), b.numpy())
    except BundlerError as exc:
        row["error"] = str(exc)
        return row
    row.update(
        rmse=stats.rmse, cosine=stats.cosine, max_abs=stats.max_abs, snr_db=_finite(stats.snr_db)
    )
    return row


def _finite(x: float) -> float | None:
    """`x`, or None for an infinite SNR (identical tensors, or A all zeros)."""
    return x if math.isfinite(x) else None


def compare_metadata(a: Bundle, b: Bundle) -> dict[str, Any]:
    """Keys only in A, only in B, and keys whose typed values differ (arrays summarized)."""
    ma, mb = a.metadata, b.metadata
    different = [
        {"key": k, "a": describe_value(ma.typed(k)), "b": describe_value(mb.typed(k))}
        for k in ma
        if k in mb and ma.typed(k) != mb.typed(k)
    ]
    return {
        "only_in_a": [k for k in ma if k not in mb],
        "only_in_b": [k for k in mb if k not in ma],
        "different": different,
        "same": sum(1 for k in ma if k in mb and ma.typed(k) == mb.typed(k)),
    }


def diff_bundles(
    a: Bundle,
    b: Bundle,
    threshold: float | None = None,
    progress: Callable[[str], None] | None = None,
) -> dict[str, Any]:
    """The full comparison of `a` and `b`; `below_threshold` names the common tensors whose
    cosine is below `threshold` (or undefined)."""
    rows, mismatches = [], []
    for name, ta in a.tensors.items():
        tb = b.tensors.get(name)
        if tb is None:
            continue
        if ta.shape != tb.shape:
            mismatches.append({"name": name, "shape_a": list(ta.shape), "shape_b": list(tb.shape)})
            continue
        if progress:
            progress(name)
        rows.append(compare_tensors(ta, tb))
    cosines = [r["cosine"] for r in rows if r["cosine"] is not None]
    rmses = [r["rmse"] for r in rows if r["rmse"] is not None]
    below = []
    if threshold is not None:
        below = [
            r["name"] for r in rows if not (r["cosine"] is not None and r["cosine"] >= threshold)
        ]
    return {
        "a": a.path,
        "b": b.path,
        "format_a": a.format,
        "format_b": b.format,
        "tensors": rows,
        "only_in_a": [n for n in a.tensors if n not in b.tensors],
        "only_in_b": [n for n in b.tensors if n not in a.tensors],
        "shape_mismatches": mismatches,
        "metadata": compare_metadata(a, b),
        "summary": {
            "compared": len(rows),
            "not_decoded": sum(1 for r in rows if r["error"] is not None),
            "min_cosine": min(cosines) if cosines else None,
            "max_rmse": max(rmses) if rmses else None,
        },
        "threshold": threshold,
        "below_threshold": below,
    }


def diff(
    path_a: str | os.PathLike[str],
    path_b: str | os.PathLike[str],
    threshold: float | None = None,
    progress: Callable[[str], None] | None = None,
) -> dict[str, Any]:
    """Compare the model files at `path_a` and `path_b`."""
    a, b = (_as_floats(p) for p in (path_a, path_b))
    return diff_bundles(a, b, threshold, progress)


def _as_floats(path: str | os.PathLike[str]) -> Bundle:
    """The model at `path` with quantized weights as the floats they stand for: affine
    groups decoded, and whatever the format itself computes from integer constants (its
    optional `dequantized`, e.g. ONNX's DequantizeLinear weights)."""
    from bundler.codecs.affine.checkpoint import dequantized
    from bundler.containers import module, open_bundle

    bundle = dequantized(open_bundle(path))
    own = getattr(module(bundle.format), "dequantized", None)
    return own(bundle) if own is not None else bundle
