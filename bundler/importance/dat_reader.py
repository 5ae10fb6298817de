"""The legacy `.dat` importance matrix (llama-imatrix `--output-format dat`, formats/imatrix.md).

Little-endian throughout: int32 entry count; per entry an int32 name length, the name, an
int32 call count `ncall`, an int32 value count and that many float32 values (the mean
squared activation times `ncall`); then, optionally, an int32 chunk count, an int32
dataset-name length and the name. llama-quantize's weight is `value / ncall` in float32
(the value itself when `ncall` is not positive).

Every length is checked against the bytes left before anything is read or allocated.
"""

from __future__ import annotations

import os

import numpy as np

from bundler.containers.oserrors import reading
from bundler.errors import FormatError, TruncatedError
from bundler.importance.matrix import ImportanceMatrix

_I32 = np.dtype("<i4")


class _Cursor:
    def __init__(self, path: str, data: np.ndarray):
        self.path, self.data, self.pos = path, data, 0

    @property
    def left(self) -> int:
        return self.data.size - self.pos

    def take(self, n: int, what: str) -> np.ndarray:
        if n > self.left:
            raise TruncatedError(
                self.path, self.pos,
                f"truncated: {what} needs {n:,} bytes but the file has {self.left:,} left",
            )  # fmt: skip
        out = self.data[self.pos : self.pos + n]
        self.pos += n
        return out

    def i32(self, what: str) -> int:
        return int(self.take(4, what).view(_I32)[0])

    def text(self, n: int, what: str) -> str:
        at = self.pos
        raw = self.take(n, what).tobytes().split(b"\0", 1)[0]  # C reads up to a NUL
        try:
            return raw.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise FormatError(self.path, at, f"{what} is not UTF-8: {exc.reason}") from None


def read(path: str | os.PathLike[str]) -> ImportanceMatrix:
    """The importance matrix of the legacy file at `path`; FormatError (or TruncatedError)
    naming the file, the offset and the problem when it is not a usable one."""
    path = os.fspath(path)
    with reading(path, "an importance matrix", "cannot read: "):
        size = os.path.getsize(path)
        # mapped, not read: a file is paid for by the pages its entries touch
        data = np.memmap(path, np.uint8, "r") if size else np.zeros(0, np.uint8)
    cur = _Cursor(path, data)
    n_entries = cur.i32("the entry count")
    if n_entries < 1:
        raise FormatError(path, 0, f"no data: the entry count is {n_entries}")
    if n_entries > cur.left // 12:  # each entry takes at least 12 bytes
        raise TruncatedError(
            path, 0, f"truncated: {n_entries:,} entries cannot fit in {cur.left:,} bytes"
        )
    entries, offsets = {}, {}
    for i in range(n_entries):
        at = cur.pos
        what = f"entry {i + 1} of {n_entries}"
        length = cur.i32(f"the name length of {what}")
        if length < 0:
            raise FormatError(path, at, f"{what} has a name length of {length}")
        name = cur.text(length, f"the name of {what}")
        ncall = cur.i32(f"the call count of {name!r}")
        nval = cur.i32(f"the value count of {name!r}")
        if nval < 1:
            raise FormatError(path, cur.pos - 4, f"entry {name!r} has {nval} values")
        values = cur.take(4 * nval, f"the {nval:,} values of {name!r}").view("<f4")
        values = values.astype(np.float32)
        if ncall > 0:
            values = values / np.float32(ncall)
        entries[name] = np.ascontiguousarray(values)  # a repeated name replaces, as in C
        offsets[name] = at
    chunk_count, datasets = 0, ()
    if cur.left:  # the chunk count and dataset name are optional
        chunk_count = cur.i32("the chunk count")
        if cur.left:
            length = cur.i32("the dataset name length")
            if length > 0:
                datasets = (cur.text(length, "the dataset name"),)
    return ImportanceMatrix(
        entries, datasets, chunk_count, 0, path=path, legacy=True, offsets=offsets
    )
