"""bundler's cache folder: `BUNDLER_CACHE`, else `~/.cache/bundler` (reference files,
native kernel entries, search tables). Apart from `assets` so that finding it imports
nothing that fetching files needs."""

from __future__ import annotations

import os
from pathlib import Path


def cache_dir() -> Path:
    """The cache folder, made if missing."""
    root = Path(os.environ.get("BUNDLER_CACHE", Path.home() / ".cache" / "bundler"))
    root.mkdir(parents=True, exist_ok=True)
    return root
