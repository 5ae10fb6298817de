"""Pictures of a plan and of a diff, drawn with matplotlib (the optional extra
`bundler[plot]`): bytes by layer and codec, and error by layer and tensor kind.

Layers are read from tensor names (`blk.N.`, `layers.N.`, `layer.N.`, `h.N.`, `blocks.N.`);
a tensor's kind is what follows the layer number (`attn_q.weight`); tensors outside the
layers are drawn as "other".
"""

from __future__ import annotations

import io
import os
import re
from collections import defaultdict
from collections.abc import Iterable
from typing import Any

from bundler import extras

EXTRA_HINT = "pictures need the optional extra: pip install 'bundler[plot]' (matplotlib)"
_LAYER = re.compile(r"(?:^|\.)(?:blk|layers?|h|blocks?)\.(\d+)\.(.+)$")
#: Width, height (inches) and resolution of the figures.
PLAN_SIZE, DIFF_SIZE, TRADEOFF_SIZE, DPI = (10.0, 5.0), (12.0, 9.0), (8.0, 5.0), 100
OTHER = "other"


def require() -> None:
    """A UsageError naming the extra when matplotlib is not installed."""
    extras.require("matplotlib", EXTRA_HINT)


def layer_and_kind(name: str) -> tuple[int | None, str]:
    """(layer number, kind) of a tensor name; (None, name) outside the layers."""
    found = _LAYER.search(name)
    if found is None:
        return None, name
    return int(found.group(1)), found.group(2)


def _figure(size: tuple[float, float]) -> Any:
    require()
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=size, dpi=DPI, layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def _save(fig: Any, path: str | os.PathLike[str] | None) -> bytes | None:
    """Write the figure as a PNG at `path`, or return the PNG's bytes when `path` is None."""
    if path is None:
        buffer = io.BytesIO()
        fig.savefig(buffer, format="png", dpi=DPI)
        return buffer.getvalue()
    from bundler.atomic import atomic_output

    with atomic_output(os.fspath(path), True) as f:
        fig.savefig(f, format="png", dpi=DPI)
    return None


def _layer_labels(layers: Iterable[int | None]) -> list[int | None]:
    found = sorted({x for x in layers if x is not None})
    return found + ([None] if any(x is None for x in layers) else [])


def plan_figure(plan: Any, path: str | os.PathLike[str] | None) -> bytes | None:
    """Bytes written per layer, stacked by codec, as a PNG at `path` (its bytes when None)."""
    fig = _figure(PLAN_SIZE)
    by = defaultdict(lambda: defaultdict(int))
    layers = []
    for c in plan.choices:
        layer, _ = layer_and_kind(c.name)
        layers.append(layer)
        by[c.target.name][layer] += c.target_bytes
    order = _layer_labels(layers)
    ax = fig.add_subplot()
    xs = list(range(len(order)))
    bottom = [0.0] * len(order)
    cmap = _colours(sorted(by))
    for codec in sorted(by):
        heights = [by[codec].get(layer, 0) / 2**20 for layer in order]
        ax.bar(xs, heights, bottom=bottom, label=codec, color=cmap[codec], width=0.85)
        bottom = [b + h for b, h in zip(bottom, heights, strict=True)]
    ax.set_xticks(xs, [OTHER if x is None else str(x) for x in order], fontsize=7)
    ax.set_xlabel("layer")
    ax.set_ylabel("bytes written (MiB)")
    title = f"{len(plan.choices)} tensors, {plan.target_bytes / 2**20:.2f} MiB of tensor data"
    if plan.allocation is not None:
        a = plan.allocation
        title += f"; size target {a.target_bytes:,} B, predicted file {a.predicted_bytes:,} B"
    ax.set_title(title, fontsize=10)
    ax.legend(title="codec", fontsize=8, ncols=2)
    return _save(fig, path)


def _colours(names: list[str]) -> dict[str, Any]:
    from matplotlib import colormaps

    cmap = colormaps["tab20"]
    return {n: cmap(i % 20) for i, n in enumerate(names)}


def diff_figure(report: dict[str, Any], path: str | os.PathLike[str] | None) -> bytes | None:
    """A diff report drawn as a PNG at `path` (its bytes when None): each tensor's relative
    RMS error by layer (one line per kind) above a heatmap of the SNR of layers by kind."""
    fig = _figure(DIFF_SIZE)
    rows = [r for r in report["tensors"] if r.get("snr_db") is not None]
    points = defaultdict(list)
    grid: dict[tuple[str, int | None], float] = {}
    for r in rows:
        layer, kind = layer_and_kind(r["name"])
        grid[(kind, layer)] = r["snr_db"]
        points[kind].append((layer, 10 ** (-r["snr_db"] / 20)))
    order = _layer_labels([layer for _, layer in grid])
    x_of = {layer: i for i, layer in enumerate(order)}
    labels = [OTHER if x is None else str(x) for x in order]
    top, bottom = fig.subplots(2, 1, height_ratios=(1, 1.3))
    for kind in sorted(points):
        pts = sorted((x_of[layer], e) for layer, e in points[kind])
        top.plot([p[0] for p in pts], [p[1] for p in pts], marker="o", ms=3, lw=1, label=kind)
    top.set_yscale("log")
    top.set_xticks(range(len(order)), labels, fontsize=7)
    top.set_xlabel("layer")
    top.set_ylabel("relative RMS error (B vs A)")
    top.set_title(f"A: {report['a']}   B: {report['b']}", fontsize=9)
    if points:
        top.legend(fontsize=7, ncols=3)
    kinds = sorted({k for k, layer in grid if layer is not None}) or sorted({k for k, _ in grid})
    import numpy as np

    columns = [x for x in order if x is not None] or order  # the layers, if any
    cells = np.full((len(kinds), len(columns)), np.nan)
    for (kind, layer), snr in grid.items():
        if kind in kinds and layer in columns:
            cells[kinds.index(kind), columns.index(layer)] = snr
    image = bottom.imshow(cells, aspect="auto", cmap="viridis", interpolation="nearest")
    bottom.set_yticks(range(len(kinds)), kinds, fontsize=7)
    bottom.set_xticks(range(len(columns)), [labels[x_of[x]] for x in columns], fontsize=7)
    bottom.set_xlabel("layer")
    bottom.set_title("SNR (dB) by layer and tensor kind; blank: identical or absent", fontsize=9)
    fig.colorbar(image, ax=bottom, label="SNR (dB), higher is closer")
    return _save(fig, path)


def tradeoff_figure(points: list[dict[str, Any]]) -> bytes:
    """Size against total squared weight error, one labelled point per candidate file
    (`points`: dicts with file, bytes and squared_error), as PNG bytes."""
    fig = _figure(TRADEOFF_SIZE)
    ax = fig.add_subplot()
    for p in points:
        error = max(p["squared_error"], 1e-30)
        ax.scatter([p["bytes"] / 1e6], [error], s=40)
        ax.annotate(p["label"], (p["bytes"] / 1e6, error), fontsize=8, xytext=(5, 5),
                    textcoords="offset points")  # fmt: skip
    ax.set_yscale("log")
    ax.set_xlabel("file size (MB)")
    ax.set_ylabel("total squared weight error vs the original")
    ax.set_title("size / error trade-off of the candidates (lower left is better)", fontsize=10)
    ax.grid(True, alpha=0.3)
    return _save(fig, None)
