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

from bundler.bundle import Metadata, Tensor, ValueType


def tensor_sha256(tensor: Tensor) -> str:
    """The sha256 of a tensor's stored bytes."""
    return hashlib.sha256(np.ascontiguousarray(tensor.raw()).tobytes()).hexdigest()


def set_every_scalar(md: Metadata, flag: bool) -> None:
    """Set `t.<type>` to a value at the edge of each scalar value type (in this order: the
    samples' bytes depend on it), the bool to `flag`."""
    md.set("t.uint8", 200, ValueType.UINT8)
    md.set("t.int8", -100, ValueType.INT8)
    md.set("t.uint16", 60000, ValueType.UINT16)
    md.set("t.int16", -30000, ValueType.INT16)
    md.set("t.uint32", 4_000_000_000, ValueType.UINT32)
    md.set("t.int32", -2_000_000_000, ValueType.INT32)
    md.set("t.float32", float(np.float32(0.1)), ValueType.FLOAT32)
    md.set("t.bool", flag, ValueType.BOOL)
    md.set("t.string", "grüße, 世界", ValueType.STRING)
    md.set("t.uint64", 2**64 - 1, ValueType.UINT64)
    md.set("t.int64", -(2**63), ValueType.INT64)
    md.set("t.float64", 2.0**-1074, ValueType.FLOAT64)


def target_in(folder: str, extension: str, directories: Iterable[str] = ()) -> Callable[[str], str]:
    """Where each sample is written: `<folder>/<name>.<extension>`, or `<folder>/<name>` for
    a sample in `directories` (a multi-file checkpoint)."""
    whole = set(directories)
    return lambda name: os.path.join(folder, name if name in whole else f"{name}.{extension}")


def generator(
    doc: str,
    folder: str,
    extension: str,
    names: Iterable[str],
    build: Callable[[str, str], None],
    describe: Callable[[str], dict],
    directories: Iterable[str] = (),
) -> tuple[Callable[[str], str], Callable[[list[str] | None], int]]:
    """A sample generator's `target_of(name)` (see `target_in`) and `main(argv)` (see
    `main`)."""
    target_of = target_in(folder, extension, directories)
    names = [*names, *directories]
    return target_of, lambda argv=None: main(doc, folder, names, target_of, build, describe, argv)


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
