"""The bundle model every container maps to and from: typed, ordered metadata plus ordered
tensors whose bytes stay where they are (a file, an array, an encoded buffer) until needed.
"""

from __future__ import annotations

import importlib
import math
import os
from collections.abc import Callable, ItemsView, Iterator, Mapping, MutableMapping, ValuesView
from dataclasses import dataclass
from enum import IntEnum
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np

from bundler.codecs import Codec, by_numpy_dtype, get
from bundler.codecs.byteorder import swap_inplace
from bundler.errors import BundlerIOError, FormatError, TruncatedError, UsageError

if TYPE_CHECKING:
    from bundler.containers.protocol import Details

#: Bytes read or encoded at a time when a tensor is streamed.
CHUNK_BYTES = 8 << 20


class ValueType(IntEnum):
    """Metadata value types; the numbers are GGUF's, the richest model of the three formats."""

    UINT8 = 0
    INT8 = 1
    UINT16 = 2
    INT16 = 3
    UINT32 = 4
    INT32 = 5
    FLOAT32 = 6
    BOOL = 7
    STRING = 8
    ARRAY = 9
    UINT64 = 10
    INT64 = 11
    FLOAT64 = 12

    @property
    def numpy_dtype(self) -> np.dtype | None:
        """Little-endian numpy dtype of a scalar of this type (None for STRING/ARRAY)."""
        return _NUMPY.get(self)


_NUMPY = {
    ValueType.UINT8: np.dtype("u1"),
    ValueType.INT8: np.dtype("i1"),
    ValueType.UINT16: np.dtype("<u2"),
    ValueType.INT16: np.dtype("<i2"),
    ValueType.UINT32: np.dtype("<u4"),
    ValueType.INT32: np.dtype("<i4"),
    ValueType.FLOAT32: np.dtype("<f4"),
    ValueType.BOOL: np.dtype("?"),
    ValueType.UINT64: np.dtype("<u8"),
    ValueType.INT64: np.dtype("<i8"),
    ValueType.FLOAT64: np.dtype("<f8"),
}


@dataclass(frozen=True, eq=False)
class Value:
    """A typed metadata value.

    Scalars are Python values; numeric and bool arrays are numpy arrays of the item type's
    dtype; string arrays are lists of str; nested arrays are lists of `Value`.
    """

    type: ValueType
    value: Any
    item_type: ValueType | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "type", _value_type(self.type))
        if self.item_type is not None:
            object.__setattr__(self, "item_type", _value_type(self.item_type))
        if self.type == ValueType.FLOAT32 and isinstance(self.value, (int, float, np.floating)):
            # a FLOAT32 holds what float32 can: every container then reads back the same value
            object.__setattr__(self, "value", float(np.float32(self.value)))

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Value):
            return NotImplemented
        if (self.type, self.item_type) != (other.type, other.item_type):
            return False
        if isinstance(self.value, np.ndarray) or isinstance(other.value, np.ndarray):
            a, b = np.asarray(self.value), np.asarray(other.value)
            return a.dtype == b.dtype and a.shape == b.shape and a.tobytes() == b.tobytes()
        if self.type == ValueType.FLOAT32 or self.type == ValueType.FLOAT64:
            return _same_float(self.value, other.value)
        return self.value == other.value

    __hash__ = None  # type: ignore[assignment]

    def plain(self) -> Any:
        """The value without its type: lists for arrays, Python scalars otherwise."""
        if self.type != ValueType.ARRAY:
            return self.value
        if isinstance(self.value, np.ndarray):
            return self.value.tolist()
        return [v.plain() if isinstance(v, Value) else v for v in self.value]


def _value_type(code: Any) -> ValueType:
    try:
        return ValueType(code)
    except ValueError:
        raise UsageError(f"{code!r} is not a GGUF value type") from None


def _same_float(a: float, b: float) -> bool:
    return np.float64(a).tobytes() == np.float64(b).tobytes()


def infer_value(value: Any) -> Value:
    """Type a plain Python value the way gguf's writer does (int -> INT32, float -> FLOAT32)."""
    if isinstance(value, Value):
        return value
    if isinstance(value, (bool, np.bool_)):
        return Value(ValueType.BOOL, bool(value))
    if isinstance(value, np.generic):
        return _infer_numpy_scalar(value)
    if isinstance(value, int):
        return Value(ValueType.INT32 if -(2**31) <= value < 2**31 else ValueType.INT64, value)
    if isinstance(value, float):
        return Value(ValueType.FLOAT32, float(np.float32(value)))
    if isinstance(value, str):
        return Value(ValueType.STRING, value)
    if isinstance(value, np.ndarray):
        item = _infer_numpy_scalar(value.dtype.type(0)).type
        return Value(ValueType.ARRAY, value.astype(item.numpy_dtype), item)
    if isinstance(value, (list, tuple)):
        return _infer_list(list(value))
    raise UsageError(f"cannot store a {type(value).__name__} as metadata")


def _infer_numpy_scalar(value: np.generic) -> Value:
    for vt, dt in _NUMPY.items():
        if value.dtype == dt.newbyteorder("="):
            return Value(vt, value.item())
    raise UsageError(f"cannot store numpy {value.dtype} as metadata")


def _infer_list(items: list[Any]) -> Value:
    if not items:
        return Value(ValueType.ARRAY, np.zeros(0, np.int32), ValueType.INT32)
    typed = [infer_value(v) for v in items]
    first = typed[0].type
    if first == ValueType.STRING and all(t.type == first for t in typed):
        return Value(ValueType.ARRAY, [t.value for t in typed], ValueType.STRING)
    if first == ValueType.ARRAY:
        return Value(ValueType.ARRAY, typed, ValueType.ARRAY)
    kinds = {t.type for t in typed}
    item = ValueType.FLOAT32 if ValueType.FLOAT32 in kinds else first
    return Value(ValueType.ARRAY, np.array([t.value for t in typed], item.numpy_dtype), item)


class Metadata(MutableMapping[str, Any]):
    """Ordered metadata whose values keep their types.

    `md[key]` gives the plain value (a Python scalar, or a list for every array, whatever
    its item type), `md.typed(key)` the `Value` (numeric arrays as numpy arrays); assigning
    a plain value infers its type, assigning a `Value` keeps it.
    """

    def __init__(self, items: Any = ()):
        self._items: dict[str, Value] = {}
        pairs = items.items() if hasattr(items, "items") else items
        for key, value in pairs:
            self[key] = value

    def __getitem__(self, key: str) -> Any:
        return self._items[key].plain()

    def __setitem__(self, key: str, value: Any) -> None:
        if not isinstance(key, str):
            raise UsageError(f"metadata keys are strings, got {key!r}")
        self._items[key] = infer_value(value)

    def __delitem__(self, key: str) -> None:
        del self._items[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self._items)

    def __len__(self) -> int:
        return len(self._items)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Metadata):
            return NotImplemented
        return list(self._items) == list(other._items) and all(
            self._items[k] == other._items[k] for k in self._items
        )

    def __repr__(self) -> str:
        return f"Metadata({len(self)} keys)"

    def typed(self, key: str) -> Value:
        """The typed value of `key`."""
        return self._items[key]

    def set(self, key: str, value: Any, type: ValueType, item_type: ValueType | None = None):
        """Store `value` under `key` with an explicit type."""
        self[key] = Value(ValueType(type), value, item_type)

    def typed_items(self) -> Iterator[tuple[str, Value]]:
        return iter(self._items.items())


# ---------------------------------------------------------------- tensor byte sources


class Source:
    """Where a tensor's encoded bytes come from."""

    __slots__ = ()

    def raw(self) -> np.ndarray:
        raise NotImplementedError

    def iter_raw(self, chunk_bytes: int) -> Iterator[np.ndarray]:
        raw = self.raw().reshape(-1)
        for start in range(0, raw.size, chunk_bytes):
            yield raw[start : start + chunk_bytes]


class BytesSource(Source):
    """Encoded bytes already in memory (an array, bytes or a buffer)."""

    def __init__(self, data: Any):
        self._data = (
            np.frombuffer(data, dtype=np.uint8)
            if not isinstance(data, np.ndarray)
            else data.view(np.uint8).reshape(-1)
        )

    def raw(self) -> np.ndarray:
        return self._data


class FileSource(Source):
    """A byte range of a file, optionally stored with big-endian fields.

    `raw()` memory-maps it; `iter_raw` reads it with plain file reads into a reused buffer,
    so streaming a tensor costs a fixed amount of memory whatever its size.
    """

    # one per tensor of a file: a million-tensor header must not cost a dict each
    __slots__ = ("big_endian", "codec", "nbytes", "offset", "path")

    def __init__(
        self,
        path: str | os.PathLike[str],
        offset: int,
        nbytes: int,
        codec: Codec,
        big_endian: bool = False,
    ):
        self.path = os.fspath(path)
        self.offset = offset
        self.nbytes = nbytes
        self.codec = codec
        self.big_endian = big_endian

    def raw(self) -> np.ndarray:
        if self.nbytes == 0:
            return np.zeros(0, np.uint8)
        try:
            mapped = np.memmap(self.path, np.uint8, "r", self.offset, (self.nbytes,))
        except (OSError, ValueError) as exc:
            raise FormatError(
                self.path, self.offset, f"cannot map {self.nbytes} bytes: {exc}"
            ) from None
        return swap_inplace(np.array(mapped), self.codec.facts) if self.big_endian else mapped

    def iter_raw(self, chunk_bytes: int) -> Iterator[np.ndarray]:
        unit = self.codec.facts.type_size
        chunk = max(unit, chunk_bytes - chunk_bytes % unit)
        buf = np.empty(min(chunk, self.nbytes), np.uint8)
        try:
            with open(self.path, "rb", buffering=0) as f:
                f.seek(self.offset)
                left = self.nbytes
                while left:
                    view = buf[: min(left, chunk)]
                    got = f.readinto(memoryview(view))
                    if got != view.size:
                        raise TruncatedError(
                            self.path,
                            self.offset + self.nbytes - left,
                            "file ends inside tensor data",
                        )
                    yield swap_inplace(view, self.codec.facts) if self.big_endian else view
                    left -= got
        except OSError as exc:
            raise BundlerIOError(f"{self.path}: {exc.strerror or exc}") from None


class ArraySource(Source):
    """Logical values in an array, encoded to the tensor's codec when read."""

    def __init__(self, array: np.ndarray, codec: Codec):
        self.array = array
        self.codec = codec

    def raw(self) -> np.ndarray:
        return self.codec.encode(self.array).reshape(-1)

    def iter_raw(self, chunk_bytes: int) -> Iterator[np.ndarray]:
        a = self.array
        if a.size == 0:
            return
        rows = None
        if not self.codec.facts.flat and a.ndim >= 2:
            rows = a.reshape(-1, a.shape[-1]) if a.flags.c_contiguous or a.ndim == 2 else None
        if rows is None:
            yield from super().iter_raw(chunk_bytes)
            return
        row_bytes = self.codec.facts.row_bytes(a.shape[-1])
        step = max(1, chunk_bytes // max(row_bytes, 1))
        for start in range(0, rows.shape[0], step):
            yield self.codec.encode(rows[start : start + step]).reshape(-1)


class Tensor:
    """A named tensor: logical shape (numpy order), codec, and where its bytes come from."""

    __slots__ = ("codec", "name", "shape", "source")

    def __init__(self, name: str, shape: tuple[int, ...], codec: Codec | str, source: Source):
        self.name = name
        if type(shape) is not tuple or not all(type(s) is int for s in shape):
            shape = tuple(int(s) for s in shape)
        self.shape = shape  # shared with the reader's record: one tuple per tensor
        self.codec = get(codec)
        self.source = source

    @classmethod
    def from_array(cls, name: str, array: Any, codec: Codec | str | None = None) -> Tensor:
        """A tensor holding `array`'s values, encoded as `codec` (default: the array's dtype)."""
        array = np.asarray(array)
        codec = get(codec) if codec is not None else codec_for_dtype(array.dtype)
        codec.encoded_shape(array.shape)  # shape check up front
        return cls(name, array.shape, codec, ArraySource(array, codec))

    @classmethod
    def from_raw(cls, name: str, shape: tuple[int, ...], codec: Codec | str, data: Any) -> Tensor:
        """A tensor from already-encoded bytes."""
        codec = get(codec)
        t = cls(name, shape, codec, BytesSource(data))
        got = t.source.raw().size
        if got != t.nbytes:
            raise UsageError(
                f"tensor {name!r}: {codec.name} {shape} needs {t.nbytes} bytes, got {got}"
            )
        return t

    @property
    def nbytes(self) -> int:
        """Size of the encoded data."""
        return self.codec.facts.nbytes(self.shape)

    @property
    def n_values(self) -> int:
        return math.prod(self.shape)

    def raw(self) -> np.ndarray:
        """The stored bytes as a flat uint8 array (memory-mapped when they come from a file)."""
        return self.source.raw()

    def iter_raw(self, chunk_bytes: int = CHUNK_BYTES) -> Iterator[np.ndarray]:
        """The stored bytes in order, a bounded chunk at a time."""
        return self.source.iter_raw(chunk_bytes)

    def numpy(self) -> np.ndarray:
        """The decoded values in the logical shape."""
        return self.codec.decode(self.raw(), self.shape)

    def __repr__(self) -> str:
        return f"Tensor({self.name!r}, {self.shape}, {self.codec.name})"


def codec_for_dtype(dtype: np.dtype) -> Codec:
    """The element codec storing numpy `dtype` unchanged."""
    return by_numpy_dtype(dtype)


class Table(Protocol):
    """Tensors held compactly (`bundler.tensortable.TensorTable`): rows made into records
    when asked for."""

    def __len__(self) -> int: ...

    def tensor(self, i: int) -> Tensor: ...

    def find(self, name: str) -> int | None: ...

    @property
    def names(self) -> Any: ...


class Tensors(MutableMapping[str, Tensor]):
    """A bundle's tensors by name, in order.

    A bundle read from a file holds its tensor table (`Table`) and makes each `Tensor` when
    it is looked up or iterated over, so listing a million tensors costs their names, not a
    record each; the first change turns the table into a plain dict.
    """

    __slots__ = ("_dict", "_table")

    def __init__(self, table: Table | None = None):
        self._table = table
        self._dict: dict[str, Tensor] | None = {} if table is None else None

    def _own(self) -> dict[str, Tensor]:
        if self._dict is None:
            assert self._table is not None
            table = self._table
            self._dict = {t.name: t for t in map(table.tensor, range(len(table)))}
            self._table = None
        return self._dict

    def __getitem__(self, name: str) -> Tensor:
        if self._dict is not None:
            return self._dict[name]
        i = self._table.find(name) if isinstance(name, str) else None
        if i is None:
            raise KeyError(name)
        return self._table.tensor(i)

    def __contains__(self, name: object) -> bool:
        if self._dict is not None:
            return name in self._dict
        return isinstance(name, str) and self._table.find(name) is not None

    def __setitem__(self, name: str, tensor: Tensor) -> None:
        self._own()[name] = tensor

    def __delitem__(self, name: str) -> None:
        del self._own()[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self._dict) if self._dict is not None else iter(self._table.names)

    def __len__(self) -> int:
        return len(self._dict) if self._dict is not None else len(self._table)

    def values(self) -> ValuesView[Tensor]:
        return _Values(self)

    def items(self) -> ItemsView[str, Tensor]:
        return _Items(self)

    @property
    def table(self) -> Table | None:
        """The table the tensors are made from (None once they are a plain dict)."""
        return self._table

    def records(self) -> Iterator[Tensor]:
        """Every tensor in order, each made as it is reached."""
        if self._dict is not None:
            return iter(self._dict.values())
        return map(self._table.tensor, range(len(self._table)))

    def __repr__(self) -> str:
        return f"Tensors({len(self)} tensors)"


class _Values(ValuesView):
    def __iter__(self) -> Iterator[Tensor]:
        return self._mapping.records()


class _Items(ItemsView):
    def __iter__(self) -> Iterator[tuple[str, Tensor]]:
        return ((t.name, t) for t in self._mapping.records())


#: What `Bundle.save` calls: `bundler.containers.save`, registered by that package (the
#: containers build on bundles, so this module cannot import them).
_writer: Callable[..., None] | None = None


def register_writer(writer: Callable[..., None]) -> None:
    """Make `writer(bundle, path, format=..., **options)` what `Bundle.save` calls."""
    global _writer
    _writer = writer


class Bundle:
    """Ordered typed metadata plus ordered tensors; every container maps to and from it.

    `format` names the container it was read from (None when built in memory) and
    `format_info` holds that container's typed details (`bundler.containers.protocol.Details`):
    what `inspect` shows and what its writer needs for a byte-identical rewrite. A plain
    mapping with the same field names is accepted and read as those details.
    """

    def __init__(
        self,
        metadata: Metadata | dict[str, Any] | None = None,
        tensors: Any = (),
        format: str | None = None,
        path: str | None = None,
        format_info: Details | Mapping[str, Any] | None = None,
    ):
        self.metadata = metadata if isinstance(metadata, Metadata) else Metadata(metadata or {})
        if hasattr(tensors, "tensor") and hasattr(tensors, "find"):
            self.tensors = Tensors(tensors)  # a reader's table: names already checked
        else:
            self.tensors = Tensors()
            for t in tensors.values() if isinstance(tensors, Mapping) else tensors:
                self.add(t)
        self.format = format
        self.path = path
        self.format_info = dict(format_info) if isinstance(format_info, Mapping) else format_info

    def add(self, tensor: Tensor) -> None:
        """Append a tensor; names must be unique."""
        if tensor.name in self.tensors:
            raise UsageError(f"duplicate tensor name {tensor.name!r}")
        self.tensors[tensor.name] = tensor

    def save(self, path: str | os.PathLike[str], format: str | None = None, **options: Any) -> None:
        """Write the bundle; the format comes from the extension when not given."""
        if _writer is None:
            # The containers package registers its writer when imported; it is named here by
            # string so that the data model does not import the formats it is written in.
            importlib.import_module("bundler.containers")
        _writer(self, path, format=format, **options)

    def __repr__(self) -> str:
        keys, tensors = len(self.metadata), len(self.tensors)
        return f"Bundle(format={self.format!r}, {keys} keys, {tensors} tensors)"
