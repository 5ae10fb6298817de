"""The apr container: `format.py` holds its entry points (sniff, read, write), `schema.py`
its byte layout, `reader.py` / `writer.py` the parsing and writing."""

from __future__ import annotations

from typing import Any

from bundler.containers.apr import format as _format


def __getattr__(name: str) -> Any:
    return getattr(_format, name)
