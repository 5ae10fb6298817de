"""Reading an importance matrix from a file in either of llama-imatrix's formats, or taking
one from a mapping, and keeping the entries llama-quantize's flags keep."""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping
from typing import Any

from bundler.containers.oserrors import reading
from bundler.errors import UsageError
from bundler.importance import dat_reader, gguf_reader
from bundler.importance.matrix import ImportanceMatrix

#: The first bytes of the GGUF form; anything else is read as the legacy form, as
#: llama-quantize does.
GGUF_MAGIC = b"GGUF"


def read(path: str | os.PathLike[str]) -> ImportanceMatrix:
    """The importance matrix in the file at `path` (GGUF or legacy `.dat`, told apart by
    the first bytes, not the extension)."""
    path = os.fspath(path)
    with reading(path, "an importance matrix", "cannot read: "), open(path, "rb") as f:
        head = f.read(4)
    return (gguf_reader if head == GGUF_MAGIC else dat_reader).read(path)


ImportanceSource = ImportanceMatrix | Mapping[str, Any] | str | os.PathLike


def load(
    source: ImportanceSource, include: Iterable[str] = (), exclude: Iterable[str] = ()
) -> ImportanceMatrix:
    """The matrix `source` names (a path, a `{tensor: weights}` mapping or a matrix), with
    only the entries `include` / `exclude` keep (substrings of the names, as
    llama-quantize's `--include-weights` / `--exclude-weights`), checked finite. Giving
    both `include` and `exclude` is a UsageError, before any file is read."""
    include, exclude = list(include), list(exclude)
    if include and exclude:
        raise UsageError("--include-weights and --exclude-weights cannot be used together")
    if isinstance(source, ImportanceMatrix):
        matrix = source
    elif isinstance(source, Mapping):
        matrix = ImportanceMatrix.from_mapping(source)
    else:
        matrix = read(source)
    matrix = matrix.selected(include, exclude)
    matrix.check_finite()
    return matrix
