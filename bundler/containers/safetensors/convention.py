"""How a bundle lives in SafeTensors (formats/safetensors.md, "Bundles SafeTensors cannot hold
as they are").

A plain bundle (string metadata, codecs SafeTensors has, tensors in the file's own order) is
a plain file. Any other bundle adds two `__metadata__` keys: `bundler.metadata`, the whole
typed metadata (typed_json), and `bundler.tensors`, each tensor's name, codec and logical
shape in bundle order. A codec SafeTensors lacks is stored as U8 rows of its bytes.
"""

from __future__ import annotations

import json
import math
from array import array
from collections.abc import Iterator
from typing import Any

from bundler.bundle import BytesSource, Metadata, Tensor, Value, ValueType
from bundler.codecs import Codec, by_safetensors_dtype, get
from bundler.containers import typed_json
from bundler.containers.safetensors.schema import (
    Header,
    Planned,
    checked_count,
    data_nbytes,
    layout_key,
)
from bundler.errors import FormatError, UnknownCodecError, UnsupportedFormatError, UsageError
from bundler.tensortable import Names, Shapes, TensorTable

META_KEY = "bundler.metadata"
TENSORS_KEY = "bundler.tensors"
RESERVED = (META_KEY, TENSORS_KEY)
_U64_MAX = 2**64 - 1


def stored_form(tensor: Tensor) -> Planned:
    """The SafeTensors dtype and shape `tensor` is stored with.

    A codec SafeTensors has is stored as itself; any other is U8 of shape
    [*leading axes, row bytes] (flat codecs: [bytes]).
    """
    facts = tensor.codec.facts
    if facts.safetensors_dtype:
        dtype, shape = facts.safetensors_dtype, tensor.shape
        if data_nbytes(dtype, shape) != tensor.nbytes:
            raise UsageError(
                f"tensor {tensor.name!r}: {facts.name} {list(shape)} is not whole rows of bytes"
            )
    else:
        dtype = "U8"
        shape = (tensor.nbytes,) if facts.flat else tensor.codec.encoded_shape(tensor.shape)
        if math.prod(shape) != tensor.nbytes:
            raise UsageError(
                f"tensor {tensor.name!r}: {facts.name} {list(tensor.shape)} does not fill "
                "whole blocks"
            )
    return Planned(tensor.name, dtype, tuple(shape), tensor.nbytes)


def is_plain(metadata: Metadata, shards: list[list[Planned]], tensors: list[Tensor]) -> bool:
    """True when the bundle needs none of the convention's keys: every metadata value a
    string (and no reserved key), every codec one SafeTensors has, and the tensors of each
    shard already in the order the file lays them out."""
    if any(v.type != ValueType.STRING or k in RESERVED for k, v in metadata.typed_items()):
        return False
    if any(not t.codec.facts.safetensors_dtype for t in tensors):
        return False
    for shard in shards:
        keys = [layout_key(p.name, p.dtype) for p in shard]
        if keys != sorted(keys):
            return False
    return True


def file_metadata(
    metadata: Metadata, tensors: list[Tensor], plain: bool, keep_empty: bool = False
) -> dict[str, str] | None:
    """The `__metadata__` object of a file holding `tensors` (None: leave the key out)."""
    strings = {
        k: v.value
        for k, v in metadata.typed_items()
        if v.type == ValueType.STRING and k not in RESERVED
    }
    if plain:
        return strings if strings or keep_empty else None
    strings[META_KEY] = typed_json.dumps(metadata)
    spec = [[t.name, t.codec.name, list(t.shape)] for t in tensors]
    strings[TENSORS_KEY] = json.dumps(spec, separators=(",", ":"), ensure_ascii=False)
    return strings


def bundle_parts(path: str, header: Header) -> tuple[Metadata, TensorTable]:
    """The metadata and tensors (in bundle order) of a file with this header."""
    md = header.metadata or {}
    if META_KEY not in md and TENSORS_KEY not in md:
        metadata = Metadata((k, Value(ValueType.STRING, v)) for k, v in md.items())
        return metadata, _plain_tensors(path, header)
    for key, other in (RESERVED, RESERVED[::-1]):
        if key not in md:
            raise FormatError(
                path,
                header.key_offset("__metadata__"),
                f"__metadata__ has {other!r} but not {key!r}",
            )
    try:
        metadata = typed_json.loads(md[META_KEY], path)
    except FormatError as exc:
        raise FormatError(path, header.key_offset("__metadata__"), exc.problem) from None
    return metadata, _convention_tensors(path, header, md[TENSORS_KEY])


def _plain_tensors(path: str, header: Header) -> TensorTable:
    e = header.entries
    codecs: dict[int, Codec] = {}
    nbytes = array("q")
    for i in range(len(e)):
        rank = e.dtypes[i]
        if rank not in codecs:
            codecs[rank] = by_safetensors_dtype(e.dtype(i))
        size = e.ends[i] - e.begins[i]
        if codecs[rank].facts.nbytes(e.shapes[i]) != size:
            name = e.names[i]
            raise UnsupportedFormatError(
                path,
                header.key_offset(name),
                f"tensor {name!r}: packed {e.dtype(i)} {list(e.shapes[i])} has rows that are "
                "not whole bytes; bundler keeps packed types as whole-byte rows",
            )
        nbytes.append(size)
    files = [(path, header.data_start, False)]
    return TensorTable(e.names, e.shapes, e.dtypes, codecs, e.begins, nbytes, files)


_SPACE = " \t\n\r"
_DECODER = json.JSONDecoder()


def _array_items(text: str) -> Iterator[Any]:
    """The items of the JSON array `text`, decoded one at a time (a long array never
    exists as one list); json's ValueError when `text` is not one."""

    def skip(i: int) -> int:
        while i < len(text) and text[i] in _SPACE:
            i += 1
        return i

    i = skip(0)
    if text[i : i + 1] != "[":
        raise json.JSONDecodeError("Expecting '['", text, i)
    i = skip(i + 1)
    if text[i : i + 1] == "]":
        i += 1
    else:
        while True:
            item, i = _DECODER.raw_decode(text, i)
            yield item
            i = skip(i)
            if text[i : i + 1] == "]":
                i += 1
                break
            if text[i : i + 1] != ",":
                raise json.JSONDecodeError("Expecting ',' delimiter", text, i)
            i = skip(i + 1)
    if skip(i) != len(text):
        raise json.JSONDecodeError("Extra data", text, skip(i))


def _convention_tensors(path: str, header: Header, text: str) -> TensorTable:
    def fail(problem: str) -> FormatError:
        at = header.key_offset("__metadata__")
        return FormatError(path, at, f"bad {TENSORS_KEY}: {problem}")

    array_ = text.lstrip(_SPACE).startswith("[")
    try:
        if not array_:
            json.loads(text)
        for _ in _array_items(text) if array_ else ():  # all of it is JSON before any use
            pass
    except (ValueError, RecursionError) as exc:
        raise fail(f"not JSON ({exc})") from None
    if not array_:
        raise fail("expected a JSON array of [name, codec, shape]")
    spec = _array_items(text)
    stored = header.entries
    listed = bytearray(len(stored))
    names, shapes, kinds, offsets, nbytes = Names(), Shapes(), array("H"), array("Q"), array("q")
    codecs: dict[int, Codec] = {}
    kind_of: dict[str, int] = {}
    for i, item in enumerate(spec):
        if not (
            isinstance(item, list)
            and len(item) == 3
            and isinstance(item[0], str)
            and isinstance(item[1], str)
            and isinstance(item[2], list)
            and all(isinstance(s, int) and not isinstance(s, bool) for s in item[2])
            and all(0 <= s <= _U64_MAX for s in item[2])
        ):
            raise fail(f"entry {i} is not [name, codec, [unsigned integers]]")
        name, codec_name, shape = item
        if checked_count(tuple(shape)) is None:
            raise fail(f"tensor {name!r}: shape {shape} overflows a 64-bit size")
        row = stored.names.find(name)
        if row is not None and listed[row]:
            raise fail(f"tensor {name!r} is listed twice")
        if row is None:
            raise fail(f"tensor {name!r} is not in the file")
        listed[row] = 1
        e = stored[row]
        try:
            codec = get(codec_name)
        except UnknownCodecError:
            raise fail(f"tensor {name!r}: unknown codec {codec_name!r}") from None
        if codec.name != codec_name:
            raise fail(f"tensor {name!r}: codec names are lower case, got {codec_name!r}")
        tensor = Tensor(name, tuple(shape), codec, BytesSource(b""))
        try:
            want = stored_form(tensor)
        except UsageError as exc:
            raise fail(f"tensor {name!r}: {exc}") from None
        if (want.dtype, want.shape) != (e.dtype, e.shape):
            raise FormatError(
                path,
                header.key_offset(e.name),
                f"tensor {name!r}: {TENSORS_KEY} says {codec_name} {shape}, stored as "
                f"{want.dtype} {list(want.shape)}, but the file holds {e.dtype} {list(e.shape)}",
            )
        kind = kind_of.setdefault(codec.name, len(kind_of))
        codecs[kind] = codec
        names.add(name)
        shapes.append(tensor.shape)
        kinds.append(kind)
        offsets.append(e.begin)
        nbytes.append(e.end - e.begin)
    missing = [stored.names[i] for i in range(len(stored)) if not listed[i]][:5]
    if missing:
        raise fail(f"tensors {missing} of the file are not listed")
    files = [(path, header.data_start, False)]
    return TensorTable(names.frozen(), shapes, kinds, codecs, offsets, nbytes, files)
