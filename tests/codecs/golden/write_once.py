"""The write-once loop of the golden encoding generators: existing files are never touched."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from pathlib import Path

import numpy as np

import bundler


def write_missing(
    folder: Path, golden_input: Callable[[], np.ndarray], codecs: Iterable[str]
) -> None:
    """Write `folder/input.f32` and each codec's `<name>.bin` encoding of it, if missing."""
    folder.mkdir(parents=True, exist_ok=True)
    source = folder / "input.f32"
    if not source.exists():
        source.write_bytes(golden_input().tobytes())
    x = np.frombuffer(source.read_bytes(), np.float32).reshape(-1, 256)
    for name in codecs:
        target = folder / f"{name}.bin"
        if target.exists():
            print(f"kept {target}")
            continue
        target.write_bytes(bundler.encode(x, name).tobytes())
        print(f"wrote {target}")
