"""The ONNX container: `format.py` holds its entry points (sniff, read, write), `schema.py`
its element types, `reader.py` / `writer.py` the reading and writing, `graph.py` where
weights live in a graph, `rewrite.py` the weight-only quantization rewrite, `runtime.py`
and `compare.py` running and comparing models in ONNX Runtime."""

from __future__ import annotations

from typing import Any

from bundler.containers.onnx import format as _format


def __getattr__(name: str) -> Any:
    return getattr(_format, name)
