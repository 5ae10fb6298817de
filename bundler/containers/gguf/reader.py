"""Parse a GGUF file's header, metadata and tensor infos; the tensor payload is never read.

The file is memory-mapped; fixed-layout records go through the Construct schemas of
`gguf_schema`, array bodies through `gguf_values`. Every count, length and offset is checked
against the file size before use, and every problem is a `FormatError` naming the file,
the byte offset and what is wrong.
"""

from __future__ import annotations

import mmap
import os
import struct
from array import array
from dataclasses import dataclass, field

import numpy as np
from construct import ConstructError

from bundler.bundle import Metadata, Value, ValueType
from bundler.codecs import Codec, by_ggml_id
from bundler.containers.gguf import schema as S
from bundler.containers.gguf.values import decode_str, read_array, value_type
from bundler.containers.limits import NestedBudget, shape_problem
from bundler.containers.oserrors import reading
from bundler.errors import (
    FormatError,
    TruncatedError,
    UnknownCodecError,
    UnsupportedFormatError,
)
from bundler.tensortable import Names, Records, TensorTable


@dataclass(slots=True)
class TensorInfo:
    """One tensor-info record as stored: dims in GGUF order (ne[0] first)."""

    name: str
    dims: tuple[int, ...]
    ggml_type: int
    offset: int
    #: file offset of the record
    at: int
    codec: Codec | None = None
    nbytes: int | None = None

    @property
    def shape(self) -> tuple[int, ...]:
        """The numpy-order shape (dims reversed)."""
        return self.dims[::-1]


class Infos(Records[TensorInfo]):
    """Every tensor-info record of a file, as columns (`TensorInfo`s made on demand);
    `shapes` are in numpy order (dims reversed)."""

    def __init__(self) -> None:
        super().__init__()
        self.types = array("I")
        self.offsets = array("Q")
        self.at = array("q")
        #: filled when the tensors are placed (0 for a type bundler does not know)
        self.nbytes = array("q")
        #: GGML type -> codec (None: unknown)
        self.codecs: dict[int, Codec | None] = {}

    def record(self, i: int) -> TensorInfo:
        codec = self.codecs.get(self.types[i])
        nbytes = self.nbytes[i] if codec is not None and i < len(self.nbytes) else None
        dims = self.shapes[i][::-1]
        return TensorInfo(
            self.names[i], dims, self.types[i], self.offsets[i], self.at[i], codec, nbytes
        )


class InfoList(Records[TensorInfo]):
    """Some rows of `Infos` (all when `rows` is None)."""

    def __init__(self, infos: Infos, rows: array | None = None):
        self.infos = infos
        self.rows = rows

    def __len__(self) -> int:
        return len(self.infos) if self.rows is None else len(self.rows)

    def record(self, i: int) -> TensorInfo:
        return self.infos.record(i if self.rows is None else self.rows[i])


@dataclass
class Layout:
    """Everything a GGUF file says about itself, before its tensor data."""

    path: str
    file_size: int
    version: int
    big_endian: bool
    metadata: Metadata
    infos: Infos
    alignment: int
    infos_end: int
    data_start: int
    #: rows of known type, when some are skipped (None: all are known)
    known: array | None = None
    #: tensors whose GGML type bundler does not know (kept out of `tensors`)
    skipped: list[TensorInfo] = field(default_factory=list)

    @property
    def tensors(self) -> InfoList:
        """The tensors of known type, in file order."""
        return InfoList(self.infos, self.known)

    def table(self) -> TensorTable:
        """The tensors of known type as a `TensorTable`."""
        x = self.infos
        codecs = {k: c for k, c in x.codecs.items() if c is not None}
        files = [(self.path, self.data_start, self.big_endian)]
        table = TensorTable(x.names, x.shapes, x.types, codecs, x.offsets, x.nbytes, files)
        return table if self.known is None else table.take(self.known)

    @property
    def padded_end(self) -> int:
        """Where the file ends when the last tensor (or the tensor infos) is padded."""
        x, a = self.infos, self.alignment
        rows = range(len(x)) if self.known is None else self.known
        ends = (x.offsets[i] + _pad(x.nbytes[i], a) for i in rows)
        return self.data_start + max(ends, default=0)


def _pad(n: int, alignment: int) -> int:
    return n + (-n % alignment)


def parse(path: str | os.PathLike[str], compiled: bool = True, decode: bool = True) -> Layout:
    """The layout of the GGUF file at `path` (Construct schemas compiled unless told not to;
    with `decode=False` every check is made but string arrays are walked, not decoded: each
    of their strings reads as "", for a caller that only asks whether the file reads)."""
    path = os.fspath(path)
    with reading(path, "a GGUF file", "cannot read: "), open(path, "rb") as f:
        size = os.fstat(f.fileno()).st_size
        if size < S.HEADER_BYTES:
            head = f.read()
            if head[:4] != S.MAGIC[: len(head[:4])]:
                raise FormatError(path, 0, f"not a GGUF file: starts with {head[:4]!r}")
            raise TruncatedError(
                path, size, f"truncated: the GGUF header needs 24 bytes, the file has {size}"
            )
        mm = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)
    try:
        return _Parser(path, mm, size, compiled, decode).run()
    finally:
        mm.close()


class _Parser:
    def __init__(self, path: str, mm: mmap.mmap, size: int, compiled: bool, decode: bool = True):
        self.path = path
        self.decode = decode
        self.mm = mm
        self.size = size
        self.compiled = compiled
        self.pos = 0

    def fail(
        self, at: int | None, problem: str, cls: type[FormatError] = FormatError
    ) -> FormatError:
        return cls(self.path, at, problem)

    def left(self) -> int:
        return self.size - self.pos

    # ------------------------------------------------------------------ header

    def run(self) -> Layout:
        mm = self.mm
        if mm[:4] != S.MAGIC:
            raise self.fail(0, f"not a GGUF file: starts with {bytes(mm[:4])!r}, not b'GGUF'")
        (version,) = struct.unpack_from("<I", mm, 4)
        big = version & 0xFFFF == 0 and version != 0
        self.big = big
        self.s = S.schemas(big, self.compiled)
        head = self.parse(self.s.header, "the GGUF header")
        version = head.version
        if version == 0:
            raise self.fail(4, "GGUF version 0 is not valid")
        if version not in S.READ_VERSIONS:
            raise UnsupportedFormatError(
                self.path, 4, f"GGUF version {version} is not supported (versions 2 and 3 are)"
            )
        n_tensors, n_kv = head.tensor_count, head.kv_count
        if n_kv > S.MAX_ENTRIES:
            raise self.fail(16, f"kv_count {n_kv:,} is more than the limit of {S.MAX_ENTRIES:,}")
        if n_tensors > S.MAX_TENSORS:
            raise self.fail(
                8, f"tensor_count {n_tensors:,} is more than the limit of {S.MAX_TENSORS:,}"
            )
        if n_kv * S.MIN_KV_BYTES > self.left():
            raise self.fail(
                16,
                f"kv_count {n_kv:,} cannot be right: that many key/value pairs need at least "
                f"{n_kv * S.MIN_KV_BYTES:,} bytes but {self.left():,} are left in the file",
                TruncatedError,
            )
        if n_tensors * S.MIN_TENSOR_INFO_BYTES > self.left():
            raise self.fail(
                8,
                f"tensor_count {n_tensors:,} cannot be right: that many tensor infos need at "
                f"least {n_tensors * S.MIN_TENSOR_INFO_BYTES:,} bytes but {self.left():,} "
                "are left in the file",
                TruncatedError,
            )
        metadata = self.read_kvs(n_kv)
        alignment = self.alignment(metadata)
        self.infos = Infos()
        for i in range(n_tensors):
            self.read_tensor_info(i)
        infos_end = self.pos
        data_start = _pad(infos_end, alignment)
        layout = Layout(
            self.path, self.size, version, big, metadata, self.infos, alignment, infos_end,
            data_start,
        )  # fmt: skip
        self.place_tensors(layout)
        return layout

    def parse(self, schema, what: str):
        """Parse one record at self.pos, turning Construct's errors into FormatErrors."""
        self.mm.seek(self.pos)
        try:
            obj = schema.parse_stream(self.mm, end=self.size)
        except (ConstructError, struct.error, ValueError, OverflowError):
            # compiled parsers report a short read as struct.error
            raise self.explain(what) from None
        self.pos = self.mm.tell()
        return obj

    def explain(self, what: str) -> FormatError:
        """Say why the record at self.pos did not parse: a lying length or a short file."""
        fmt = ">" if self.big else "<"
        at = self.pos
        # Walk the record's leading strings: a key or name, and a string value after a type.
        for step in ("string", "type", "string"):
            if step == "type":
                if at + 4 > self.size:
                    break
                (code,) = struct.unpack_from(fmt + "I", self.mm, at)
                if code != ValueType.STRING:
                    break
                at += 4
                continue
            if at + 8 > self.size:
                break
            (n,) = struct.unpack_from(fmt + "Q", self.mm, at)
            if n > self.size - at - 8:
                return self.fail(
                    at,
                    f"{what}: string length {n:,} runs past the end of the file "
                    f"({self.size - at - 8:,} bytes left)",
                    TruncatedError,
                )
            at += 8 + n
            if "tensor" in what and step == "string":
                if at + 4 <= self.size:
                    (n_dims,) = struct.unpack_from(fmt + "I", self.mm, at)
                    if n_dims > S.MAX_DIMS_READ:
                        return self.fail(
                            at, f"{what}: n_dims {n_dims:,} is more than {S.MAX_DIMS_READ}"
                        )
                break
        return self.fail(
            self.pos, f"truncated: {what} runs past the end of the file", TruncatedError
        )

    # ------------------------------------------------------------------ key/value pairs

    def read_kvs(self, n_kv: int) -> Metadata:
        md = Metadata()
        self.budget = NestedBudget()
        items = md._items  # filled directly: values are already typed
        self.kv_at: dict[str, int] = {}
        for i in range(n_kv):
            at = self.pos
            kv = self.parse(self.s.kv, f"key/value pair {i}")
            key = decode_str(kv.key.data)
            what = f"metadata {key!r}"
            if not key:
                raise self.fail(at, f"key/value pair {i} has an empty key")
            if key in items:
                raise self.fail(at, f"duplicate metadata key {key!r}")
            self.kv_at[key] = at
            vt = value_type(kv.type, self.path, at + 8 + kv.key.length, what)
            if vt == ValueType.ARRAY:
                items[key] = self.read_array_value(kv.value, what)
            elif vt == ValueType.STRING:
                items[key] = Value(vt, decode_str(kv.value.data))
            elif vt == ValueType.BOOL:
                items[key] = Value(vt, kv.value != 0)
            else:
                items[key] = Value(vt, kv.value)
        return md

    def read_array_value(self, head, what: str) -> Value:
        item = value_type(head.item_type, self.path, self.pos - 12, f"{what} array")
        value, self.pos = read_array(
            self.mm, self.pos, self.size, item, head.count, self.big, self.path, what,
            budget=self.budget, decode=self.decode,
        )  # fmt: skip
        return value

    def alignment(self, md: Metadata) -> int:
        if S.ALIGNMENT_KEY not in md:
            return S.DEFAULT_ALIGNMENT
        v = md.typed(S.ALIGNMENT_KEY)
        at = self.kv_at[S.ALIGNMENT_KEY]
        if v.type != ValueType.UINT32:
            raise self.fail(at, f"{S.ALIGNMENT_KEY} must be UINT32, not {v.type.name}")
        if v.value == 0 or v.value & (v.value - 1):
            raise self.fail(at, f"{S.ALIGNMENT_KEY} {v.value} is not a power of two")
        return v.value

    # ------------------------------------------------------------------ tensor infos

    def read_tensor_info(self, i: int) -> None:
        at = self.pos
        rec = self.fast_tensor_info()
        if rec is None:
            rec = self.parse(self.s.tensor_info, f"tensor info {i}")
            rec = (rec.name.data, tuple(rec.dims), rec.ggml_type, rec.offset)
        raw, dims, ggml_type, offset = rec
        for d, n in enumerate(dims):
            if n >= 1 << 63:
                raise self.fail(
                    at, f"tensor {decode_str(raw)!r}: dimension {d} is negative ({n - 2**64})"
                )
        problem = shape_problem(dims, S.MAX_DIMS_READ)
        if problem:
            raise self.fail(at, f"tensor {decode_str(raw)!r}: {problem}")
        try:
            raw.decode("utf-8")
        except UnicodeDecodeError:
            raw = Names.encode(decode_str(raw))
        x = self.infos
        x.names.add_encoded(raw)
        x.shapes.append(dims[::-1])
        x.types.append(ggml_type)
        x.offsets.append(offset)
        x.at.append(at)

    def fast_tensor_info(self) -> tuple[bytes, tuple[int, ...], int, int] | None:
        """The record at self.pos unpacked with `struct` (the schema's layout, without
        Construct's per-record cost); None when it does not fit: the schema then says why."""
        fmt = ">" if self.big else "<"
        pos, mm, size = self.pos, self.mm, self.size
        if pos + 12 > size:
            return None
        (n,) = struct.unpack_from(fmt + "Q", mm, pos)
        head = pos + 8 + n
        if n > size - pos - 8 or head + 4 > size:
            return None
        (n_dims,) = struct.unpack_from(fmt + "I", mm, head)
        end = head + 4 + 8 * n_dims + 12
        if n_dims > S.MAX_DIMS_READ or end > size:
            return None
        *dims, ggml_type, offset = struct.unpack_from(f"{fmt}{n_dims}QIQ", mm, head + 4)
        self.pos = end
        return mm[pos + 8 : head], tuple(dims), ggml_type, offset

    def place_tensors(self, layout: Layout) -> None:
        """Resolve codecs and sizes; check names, offsets and bounds the way llama.cpp does."""
        x = self.infos
        names, repeat = x.names.frozen(), x.names.first_repeat()
        codecs, nbytes, skipped = x.codecs, x.nbytes, []
        expected: int | None = 0
        for i in range(len(x)):
            if i == repeat:
                raise self.fail(x.at[i], f"duplicate tensor name {names[i]!r}")
            ggml_type = x.types[i]
            if ggml_type not in codecs:
                try:
                    codecs[ggml_type] = by_ggml_id(ggml_type)
                except UnknownCodecError:
                    codecs[ggml_type] = None
            codec = codecs[ggml_type]
            if codec is None:
                # The size of an unknown type cannot be derived: skip it, check the next
                # tensor's offset only for alignment.
                if len(skipped) == S.MAX_UNKNOWN_TENSORS:
                    raise self.fail(
                        x.at[i],
                        f"more than {S.MAX_UNKNOWN_TENSORS:,} tensors of GGML types bundler "
                        f"does not know (tensor {names[i]!r} has type {ggml_type})",
                    )
                skipped.append(i)
                nbytes.append(0)
                expected = None
                continue
            size = self.nbytes(i, codec)
            nbytes.append(size)
            offset = x.offsets[i]
            if expected is not None and offset != expected:
                raise self.fail(
                    x.at[i],
                    f"tensor {names[i]!r} has offset {offset:,} but llama.cpp requires "
                    f"{expected:,} (tensors stored in order, each padded to {layout.alignment})",
                )
            if expected is None and offset % layout.alignment:
                raise self.fail(x.at[i], f"tensor {names[i]!r} offset {offset:,} is not aligned")
            start = layout.data_start + offset
            if start + size > self.size:
                raise self.fail(
                    x.at[i],
                    f"truncated: tensor {names[i]!r} needs bytes {start:,}..{start + size:,} "
                    f"but the file ends at {self.size:,}",
                    TruncatedError,
                )
            expected = offset + _pad(size, layout.alignment)
        if skipped:
            gone = set(skipped)
            layout.known = array("q", (i for i in range(len(x)) if i not in gone))
            layout.skipped = [x.record(i) for i in skipped]
            self.check_overlaps(skipped)
        if len(x) and layout.data_start > self.size:
            raise self.fail(
                layout.infos_end,
                f"truncated: the data section starts at {layout.data_start:,} "
                f"but the file ends at {self.size:,}",
                TruncatedError,
            )

    def check_overlaps(self, skipped: list[int]) -> None:
        """After a tensor of unknown type, offsets are no longer derived: check instead that
        no two known tensors share bytes and no unknown one starts inside a known one."""
        x = self.infos
        starts = np.frombuffer(x.offsets, np.uint64)
        sizes = np.frombuffer(x.nbytes, np.int64).astype(np.uint64)
        stops = starts + sizes  # known tensors end inside the file; unknown ones have size 0
        unknown = np.zeros(len(x), bool)
        unknown[skipped] = True
        keep = np.flatnonzero((sizes > 0) | unknown)  # empty known tensors take no bytes
        order = keep[np.lexsort((stops[keep], starts[keep]))]
        end, owner = 0, None
        for i in map(int, order):
            start, stop = x.offsets[i], x.offsets[i] + x.nbytes[i]
            if start < end:
                raise self.fail(
                    x.at[i],
                    f"tensor {x.names[i]!r} at data offset {start:,} overlaps tensor "
                    f"{x.names[owner]!r}, which ends at {end:,}",
                )
            if stop > end:
                end, owner = stop, i

    def nbytes(self, i: int, codec: Codec) -> int:
        facts = codec.facts
        shape = self.infos.shapes[i]
        row = shape[-1] if shape else 1
        if row % facts.block_size:
            raise self.fail(
                self.infos.at[i],
                f"tensor {self.infos.names[i]!r} of type {facts.name} has {row:,} values per "
                f"row, not a multiple of the block size {facts.block_size}",
            )
        return facts.nbytes(shape if shape else (1,))
