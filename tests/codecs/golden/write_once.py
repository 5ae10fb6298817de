"""The write-once loop of the golden encoding generators: existing files are never touched."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from pathlib import Path

import numpy as np

import bundler


def write_missing(
    folder: Path,
    golden_input: Callable[[], np.ndarray],
    codecs: Iterable[str],
    importance: Callable[[], np.ndarray] | None = None,
) -> None:
    """Write `folder/input.f32` and each codec's `<name>.bin` encoding of it, if missing;
    with `importance`, also `folder/importance.f32` and encodings weighted by it."""
    folder.mkdir(parents=True, exist_ok=True)
    x = _once(folder / "input.f32", golden_input).reshape(-1, 256)
    weights = None if importance is None else _once(folder / "importance.f32", importance)
    for name in codecs:
        target = folder / f"{name}.bin"
        if target.exists():
            print(f"kept {target}")
            continue
        target.write_bytes(bundler.encode(x, name, importance=weights).tobytes())
        print(f"wrote {target}")


def _once(path: Path, make: Callable[[], np.ndarray]) -> np.ndarray:
    """The float32 values of `path`, written from `make()` first if it is missing."""
    if not path.exists():
        path.write_bytes(np.ascontiguousarray(make(), np.float32).tobytes())
    return np.frombuffer(path.read_bytes(), np.float32)
