"""What the conformance generators share: the write-only-what-is-missing command line, and the
expected-content file written beside each sample."""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import tempfile
from collections.abc import Callable, Iterable

import numpy as np

from bundler.bundle import Tensor


def tensor_sha256(tensor: Tensor) -> str:
    """The sha256 of a tensor's stored bytes."""
    return hashlib.sha256(np.ascontiguousarray(tensor.raw()).tobytes()).hexdigest()


def main(
    doc: str,
    folder: str,
    names: Iterable[str],
    target_of: Callable[[str], str],
    build: Callable[[str, str], None],
    describe: Callable[[str], dict],
    argv: list[str] | None = None,
) -> int:
    """Write every sample of `names` that is missing from `folder` (all of them with --force),
    each with its `<name>.json` description; `doc` is the generator's docstring."""
    parser = argparse.ArgumentParser(description=doc.split("\n")[0])
    parser.add_argument("--force", action="store_true", help="regenerate existing files")
    args = parser.parse_args(argv)
    os.makedirs(folder, exist_ok=True)
    for name in names:
        target = target_of(name)
        if os.path.exists(target) and not args.force:
            print(f"keep   {target}")
            continue
        with tempfile.TemporaryDirectory(dir=folder) as tmp:
            tmp_target = os.path.join(tmp, os.path.basename(target))
            build(name, tmp_target)
            if os.path.isdir(target):
                shutil.rmtree(target)
            os.replace(tmp_target, target)
        with open(os.path.join(folder, f"{name}.json"), "w", encoding="utf-8") as f:
            json.dump(describe(target), f, indent=1, sort_keys=True, ensure_ascii=False)
            f.write("\n")
        print(f"wrote  {target}")
    return 0
