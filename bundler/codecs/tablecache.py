"""Search tables built once per installation: arrays that are a pure function of a few
constants and of the code that builds them (the i-quants' neighbour lists), kept in
bundler's cache folder (`cachedir.cache_dir()/tables`) so that later processes read them
instead of building them again (up to a second and a half for IQ1's grid).

A file is named by a hash of everything the arrays depend on, and holds a SHA-256 of its
arrays: a file that is damaged, unreadable or of other contents is never used; the tables
are then built and the file written anew. BUNDLER_TABLE_CACHE=0 turns the cache off.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import os
from collections.abc import Callable
from pathlib import Path

import numpy as np

#: Environment switch: "0" builds every table in every process.
ENV_SWITCH = "BUNDLER_TABLE_CACHE"
_DIGEST = "sha256"


def cached(
    name: str, depends: list[bytes | Path], build: Callable[[], dict[str, np.ndarray]]
) -> dict[str, np.ndarray]:
    """The arrays `build()` returns, read from the cache when a process built them before
    from the same `depends` (byte strings, and source files whose contents count)."""
    if os.environ.get(ENV_SWITCH, "1") == "0":
        return build()
    path = _path(name, depends)
    found = _read(path)
    if found is not None:
        return found
    arrays = build()
    with contextlib.suppress(OSError):  # a cache that cannot be written is only slower
        _write(path, arrays)
    return arrays


def _path(name: str, depends: list[bytes | Path]) -> Path:
    from bundler.cachedir import cache_dir

    h = hashlib.sha256(name.encode())
    for d in depends:
        h.update(d.read_bytes() if isinstance(d, Path) else d)
        h.update(b"\0")
    return cache_dir() / "tables" / f"{name}-{h.hexdigest()[:24]}.npz"


def _digest(arrays: dict[str, np.ndarray]) -> bytes:
    h = hashlib.sha256()
    for key in sorted(arrays):
        a = np.ascontiguousarray(arrays[key])
        h.update(f"{key}:{a.dtype.str}:{a.shape}\n".encode())
        h.update(a.tobytes())
    return h.digest()


def _read(path: Path) -> dict[str, np.ndarray] | None:
    """The arrays of a cache file whose digest matches them; None for any other file."""
    try:
        with np.load(path, allow_pickle=False) as npz:
            arrays = {k: npz[k] for k in npz.files}
    except Exception:  # missing, truncated, not an archive: built anew
        return None
    stored = arrays.pop(_DIGEST, None)
    if stored is None or stored.dtype != np.uint8 or stored.tobytes() != _digest(arrays):
        return None
    return arrays


def _write(path: Path, arrays: dict[str, np.ndarray]) -> None:
    """Write the arrays and their digest, whole or not at all."""
    from bundler.atomic import replace_whole

    buf = io.BytesIO()
    np.savez(buf, **arrays, **{_DIGEST: np.frombuffer(_digest(arrays), np.uint8)})
    path.parent.mkdir(parents=True, exist_ok=True)
    replace_whole(path, buf.getvalue())
