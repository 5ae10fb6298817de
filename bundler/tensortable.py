"""A file's tensor table held as columns: names in one buffer, shapes, codecs and byte
ranges in flat arrays. A `Tensor` record is made only when one is asked for, so reading a
header of a million tensors costs a few dozen bytes per tensor, not a few hundred.
"""

from __future__ import annotations

from array import array
from collections.abc import Iterable, Iterator, Mapping, Sequence
from typing import TypeVar

import numpy as np

from bundler.bundle import FileSource, Tensor
from bundler.codecs import Codec

#: Names are kept as UTF-8; lone surrogates (GGUF's undecodable bytes, JSON escapes) survive.
_ERRORS = "surrogatepass"


class Ragged:
    """Variable-length rows stored flat: row i is `flat[starts[i]:starts[i + 1]]`."""

    __slots__ = ("flat", "starts")

    def __init__(self, flat: bytearray | array, starts: array | None = None):
        self.flat = flat
        self.starts = starts if starts is not None else array("q", [0])

    def __len__(self) -> int:
        return len(self.starts) - 1

    def append(self, row: Iterable) -> None:
        if isinstance(self.flat, bytes):
            self.flat = bytearray(self.flat)
        self.flat.extend(row)
        self.starts.append(len(self.flat))

    def row(self, i: int):
        starts = self.starts
        return self.flat[starts[i] : starts[i + 1]]

    def take(self, rows: Iterable[int]) -> Ragged:
        out = type(self)()
        for i in rows:
            Ragged.append(out, self.row(i))
        return out.frozen()

    @classmethod
    def concat(cls, parts: Sequence[Ragged]) -> Ragged:
        out = cls()
        for part in parts:
            shift = len(out.flat)
            out.flat.extend(part.flat)
            out.starts.extend(s + shift for s in part.starts[1:])
        return out.frozen()

    def frozen(self) -> Ragged:
        """The same rows, read-only from now on (a name buffer becomes `bytes`)."""
        if isinstance(self.flat, bytearray):
            self.flat = bytes(self.flat)
        return self


class Shapes(Ragged):
    """Tensor shapes (numpy order) as decimal text, `4,64`: a shape never costs more bytes
    than a header spends on it (SafeTensors writes the same digits; GGUF and APR spend 8
    bytes a dimension, and the element limit keeps all but one dimension short)."""

    __slots__ = ()

    def __init__(self, flat: bytearray | None = None, starts: array | None = None):
        super().__init__(flat if flat is not None else bytearray(), starts)

    def append(self, shape: Iterable[int]) -> None:
        super().append(b",".join([b"%d" % d for d in shape]))

    def __getitem__(self, i: int) -> tuple[int, ...]:
        row = self.row(i)
        return tuple(map(int, row.split(b","))) if row else ()


class Names(Ragged):
    """Strings as one UTF-8 buffer plus offsets; `find` uses a hash index built on first use
    (16 bytes a name)."""

    __slots__ = ("_hashes", "_order")

    def __init__(self, flat: bytearray | None = None, starts: array | None = None):
        super().__init__(flat if flat is not None else bytearray(), starts)
        self._hashes: np.ndarray | None = None
        self._order: np.ndarray | None = None

    @staticmethod
    def encode(name: str) -> bytes:
        """The stored form of `name`."""
        return name.encode("utf-8", _ERRORS)

    def add(self, name: str) -> None:
        self.append(self.encode(name))
        self._hashes = None

    def add_encoded(self, raw: bytes) -> None:
        """Append a name already in its stored form (`encode`)."""
        self.append(raw)
        self._hashes = None

    def __getitem__(self, i: int) -> str:
        return self.row(i).decode("utf-8", _ERRORS)

    def __iter__(self) -> Iterator[str]:
        flat, starts = self.flat, self.starts
        for i in range(len(starts) - 1):
            yield flat[starts[i] : starts[i + 1]].decode("utf-8", _ERRORS)

    def _index(self) -> tuple[np.ndarray, np.ndarray]:
        if self._hashes is None or len(self._hashes) != len(self):
            flat, starts = self.frozen().flat, self.starts
            hashes = np.fromiter(
                (hash(flat[starts[i] : starts[i + 1]]) for i in range(len(starts) - 1)),
                np.int64,
                len(starts) - 1,
            )
            order = np.argsort(hashes, kind="stable")
            self._hashes, self._order = hashes[order], order
        assert self._order is not None
        return self._hashes, self._order

    def find(self, name: str) -> int | None:
        """The first row holding `name`, or None."""
        key = self.encode(name)
        hashes, order = self._index()
        h = hash(key)
        for j in range(int(np.searchsorted(hashes, h)), len(hashes)):
            if hashes[j] != h:
                break
            if self.row(int(order[j])) == key:
                return int(order[j])
        return None

    def first_repeat(self) -> int | None:
        """The first row whose name an earlier row already has, or None."""
        hashes, order = self._index()
        same = np.flatnonzero(hashes[1:] == hashes[:-1])
        best = None
        for j in same:
            # rows of one hash are in row order (stable sort): compare with every earlier one
            row = int(order[j + 1])
            k = j
            while k >= 0 and hashes[k] == hashes[j + 1]:
                if self.row(int(order[k])) == self.row(row):
                    if best is None or row < best:
                        best = row
                    break
                k -= 1
        return best

    def __sizeof__(self) -> int:
        return len(self.flat) + 8 * len(self.starts)


R = TypeVar("R")


class Records(Sequence[R]):
    """A read-only list of records kept as columns (at least `names` and `shapes`); a
    subclass makes row i's record in `record(i)`."""

    def __init__(self) -> None:
        self.names = Names()
        self.shapes = Shapes()

    def __len__(self) -> int:
        return len(self.names)

    def record(self, i: int) -> R:
        raise NotImplementedError

    def __getitem__(self, i):  # type: ignore[override]
        if isinstance(i, slice):
            return [self.record(j) for j in range(*i.indices(len(self)))]
        n = len(self)
        if not -n <= i < n:
            raise IndexError(i)
        return self.record(i % n)

    def __iter__(self) -> Iterator[R]:
        return map(self.record, range(len(self)))


class TensorTable:
    """Tensors stored in files, as columns; `tensor(i)` makes the record of row i.

    Row i has the name `names[i]`, the shape `shapes[i]` (numpy order), the codec
    `codecs[kinds[i]]`, and `nbytes[i]` bytes at `files[f].base + offsets[i]` of file
    `files[f]`, where f is `file_ids[i]` (0 when there is one file).
    """

    __slots__ = ("codecs", "file_ids", "files", "kinds", "names", "nbytes", "offsets", "shapes")

    def __init__(
        self,
        names: Names,
        shapes: Shapes,
        kinds: array,
        codecs: Mapping[int, Codec],
        offsets: array,
        nbytes: array,
        files: Sequence[tuple[str, int, bool]],
        file_ids: array | None = None,
    ):
        self.names = names
        self.shapes = shapes
        self.kinds = kinds
        self.codecs = codecs
        self.offsets = offsets
        self.nbytes = nbytes
        self.files = files
        self.file_ids = file_ids

    def __len__(self) -> int:
        return len(self.names)

    def tensor(self, i: int) -> Tensor:
        """The record of row i."""
        codec = self.codecs[self.kinds[i]]
        path, base, big = self.files[self.file_ids[i] if self.file_ids is not None else 0]
        source = FileSource(path, base + self.offsets[i], self.nbytes[i], codec, big)
        return Tensor(self.names[i], self.shapes[i], codec, source)

    def find(self, name: str) -> int | None:
        """The row of tensor `name`, or None."""
        return self.names.find(name)

    def take(self, rows: Sequence[int]) -> TensorTable:
        """A table of the given rows, in that order."""
        return TensorTable(
            self.names.take(rows),
            self.shapes.take(rows),
            array(self.kinds.typecode, (self.kinds[i] for i in rows)),
            self.codecs,
            array(self.offsets.typecode, (self.offsets[i] for i in rows)),
            array(self.nbytes.typecode, (self.nbytes[i] for i in rows)),
            self.files,
            None if self.file_ids is None else array("H", (self.file_ids[i] for i in rows)),
        )

    @classmethod
    def concat(cls, tables: Sequence[TensorTable]) -> TensorTable:
        """One table of `tables`' rows in order (their files numbered in order)."""
        if len(tables) == 1:
            return tables[0]
        files: list[tuple[str, int, bool]] = []
        file_ids = array("H")
        codecs: dict[int, Codec] = {}
        kind_of: dict[str, int] = {}
        kinds = array("H")
        offsets, nbytes = array(tables[0].offsets.typecode), array(tables[0].nbytes.typecode)
        for t in tables:
            ids = t.file_ids if t.file_ids is not None else array("H", bytes(2 * len(t)))
            file_ids.extend(i + len(files) for i in ids)
            files.extend(t.files)
            # each table numbers its codecs its own way: renumber them by codec name
            renumber = {}
            for k, codec in t.codecs.items():
                renumber[k] = kind_of.setdefault(codec.name, len(kind_of))
                codecs[renumber[k]] = codec
            kinds.extend(renumber[k] for k in t.kinds)
            offsets.extend(t.offsets)
            nbytes.extend(t.nbytes)
        return cls(
            Names.concat([t.names for t in tables]),
            Shapes.concat([t.shapes for t in tables]),
            kinds, codecs, offsets, nbytes, files, file_ids,
        )  # fmt: skip
