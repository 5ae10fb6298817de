"""`report`: one self-contained HTML page comparing quantized versions of a model with the
original: a table of every candidate (size, bits per weight, weight error), the size/error
trade-off, and each candidate's per-layer error pictures, all figures inlined as PNG data
URIs (no network, no external file). Needs matplotlib (`bundler[plot]`).

The weight error of a candidate is the sum over the tensors both files hold of each
tensor's squared error (`bundler diff`'s rmse^2 x values); its relative error divides that
by the original's energy (sum of squares) of the tensors that differ.
"""

from __future__ import annotations

import base64
import html
import math
import os
from collections.abc import Callable, Sequence
from typing import Any

from bundler.diff import diff
from bundler.plot import diff_figure, require, tradeoff_figure

#: What the page's own script reports once every figure has decoded (read by the tests).
FIGURES_ATTRIBUTE = "data-figures-loaded"


def summarize(diff_report: dict[str, Any], path: str) -> dict[str, Any]:
    """One candidate's row: file size, bits per weight and its error figures."""
    noise = signal = 0.0
    values = 0
    for r in diff_report["tensors"]:
        if r["rmse"] is None:
            continue
        n = math.prod(r["shape"])
        values += n
        sq = r["rmse"] ** 2 * n
        noise += sq
        if r["snr_db"] is not None:
            signal += sq * 10 ** (r["snr_db"] / 10)
    size = _size(path)
    cosines = [r["cosine"] for r in diff_report["tensors"] if r["cosine"] is not None]
    worst = min(
        (r for r in diff_report["tensors"] if r["cosine"] is not None),
        key=lambda r: r["cosine"],
        default=None,
    )
    return {
        "file": path,
        "label": os.path.basename(path.rstrip(os.sep)),
        "format": diff_report["format_b"],
        "bytes": size,
        "bits_per_weight": size * 8 / values if values else None,
        "squared_error": noise,
        "relative_error": noise / signal if signal else 0.0,
        "min_cosine": min(cosines) if cosines else None,
        "worst_tensor": worst["name"] if worst else None,
        "compared": diff_report["summary"]["compared"],
    }


def _size(path: str) -> int:
    if os.path.isdir(path):
        return sum(
            os.path.getsize(os.path.join(path, n))
            for n in os.listdir(path)
            if n.endswith((".safetensors", ".gguf", ".apr", ".onnx"))
        )
    return os.path.getsize(path)


def build(
    original: str | os.PathLike[str],
    candidates: Sequence[str | os.PathLike[str]],
    progress: Callable[[str], None] | None = None,
) -> tuple[dict[str, Any], dict[str, bytes]]:
    """The report's data (sorted-key friendly) and its figures (name -> PNG bytes)."""
    require()
    original = os.fspath(original)
    rows, figures = [], {}
    for i, path in enumerate(os.fspath(c) for c in candidates):
        if progress:
            progress(path)
        d = diff(original, path)
        rows.append(summarize(d, path))
        figures[f"layers-{i}"] = diff_figure(d, None)
    figures["tradeoff"] = tradeoff_figure(rows)
    data = {"original": original, "original_bytes": _size(original), "candidates": rows}
    return data, figures


def _uri(png: bytes) -> str:
    return "data:image/png;base64," + base64.b64encode(png).decode("ascii")


def _num(x: Any, spec: str) -> str:
    return "&ndash;" if x is None else format(x, spec)


def render(data: dict[str, Any], figures: dict[str, bytes]) -> str:
    """The page's HTML text."""
    e = html.escape
    head = (
        "<tr><th>file</th><th>format</th><th>bytes</th><th>bits/weight</th>"
        "<th>squared error</th><th>relative error</th><th>min cosine</th><th>worst tensor</th></tr>"
    )
    body = "".join(
        f"<tr><td>{e(r['label'])}</td><td>{e(r['format'])}</td><td>{r['bytes']:,}</td>"
        f"<td>{_num(r['bits_per_weight'], '.3f')}</td><td>{r['squared_error']:.6g}</td>"
        f"<td>{_num(r['relative_error'], '.3e')}</td><td>{_num(r['min_cosine'], '.6f')}</td>"
        f"<td>{e(r['worst_tensor'] or '')}</td></tr>"
        for r in data["candidates"]
    )
    sections = "".join(
        f"<h2>{e(r['label'])}: error by layer and tensor kind</h2>"
        f'<img alt="per-layer error of {e(r["label"])}" src="{_uri(figures[f"layers-{i}"])}">'
        for i, r in enumerate(data["candidates"])
    )
    n = len(figures)
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8">
<title>bundler report: {e(os.path.basename(data["original"]))}</title>
<style>
body {{ font-family: sans-serif; margin: 2em; color: #222; }}
table {{ border-collapse: collapse; margin: 1em 0; }}
th, td {{ border: 1px solid #bbb; padding: 0.3em 0.6em; text-align: right; }}
th:first-child, td:first-child, td:last-child {{ text-align: left; }}
img {{ display: block; max-width: 100%; margin: 0.5em 0 2em; }}
</style></head>
<body>
<h1>Quantization report</h1>
<p>Original: {e(data["original"])} ({data["original_bytes"]:,} bytes). Errors are weight-space:
the sum over tensors of squared differences from the original (<code>bundler diff</code>'s
RMSE squared times values); relative error divides it by the original's energy in the
tensors that differ.</p>
<table>{head}{body}</table>
<h2>Size and error</h2>
<img alt="size / error trade-off" src="{_uri(figures["tradeoff"])}">
{sections}
<script>
window.addEventListener("load", function () {{
  var ok = Array.prototype.filter.call(document.images, function (i) {{
    return i.complete && i.naturalWidth > 0; }}).length;
  document.documentElement.setAttribute("{FIGURES_ATTRIBUTE}", ok + "/{n}");
}});
</script>
</body></html>
"""


def write_report(
    original: str | os.PathLike[str],
    candidates: Sequence[str | os.PathLike[str]],
    out: str | os.PathLike[str],
    force: bool = False,
    progress: Callable[[str], None] | None = None,
) -> dict[str, Any]:
    """Build the page for `candidates` against `original` and write it to `out` (atomically;
    an existing `out` needs `force`); returns the report's data."""
    from bundler.atomic import atomic_output
    from bundler.errors import OutputExistsError

    out = os.fspath(out)
    if not force and os.path.exists(out):
        raise OutputExistsError(out)
    data, figures = build(original, candidates, progress)
    with atomic_output(out, force) as f:
        f.write(render(data, figures).encode("utf-8"))
    data["output"] = out
    return data
