"""Readers that do not use bundler's own code, for checking what a conversion wrote.

GGUF and SafeTensors outputs are read with the `gguf` and `safetensors` packages; APR has
no package to read it, so `read_apr` parses it from formats/apr.md with struct and zlib
and checks every layout rule on the way.
"""

from __future__ import annotations

import itertools
import json
import math
import struct
import zlib
from dataclasses import dataclass
from pathlib import Path

import gguf
import numpy as np
from gguf import GGMLQuantizationType as Q
from safetensors import safe_open

#: APR codes of the element dtypes these tests meet (formats/apr.md); codes from 64 up are
#: 64 + the GGML type id.
APR_ELEMENTS = {0: ("f32", 4), 1: ("f16", 2), 5: ("i64", 8)}
APR_GGML_BASE = 64


@dataclass
class Stored:
    """One tensor as a file stores it: codec name, logical shape (numpy order), bytes."""

    codec: str
    shape: tuple[int, ...]
    data: np.ndarray  # flat uint8

    @property
    def nbytes(self) -> int:
        return self.data.size


def _ggml_nbytes(qtype: Q, shape: tuple[int, ...]) -> int:
    block, size = gguf.GGML_QUANT_SIZES[qtype]
    return math.prod(shape) // block * size


def read_gguf(path: Path) -> tuple[dict[str, Stored], dict[str, object]]:
    """Tensors and scalar metadata of a GGUF file, through gguf.GGUFReader."""
    reader = gguf.GGUFReader(path)
    tensors = {}
    for t in reader.tensors:
        shape = tuple(int(d) for d in reversed(t.shape))
        data = np.asarray(t.data).reshape(-1).view(np.uint8)
        tensors[t.name] = Stored(t.tensor_type.name.lower(), shape, data)
    metadata = {}
    for key, field in reader.fields.items():
        if len(field.types) == 1 and field.types[0] != gguf.GGUFValueType.STRING:
            metadata[key] = (field.types[0], field.parts[-1][0].item())
    return tensors, metadata


def read_safetensors(path: Path) -> tuple[dict[str, np.ndarray], dict[str, str]]:
    """Arrays (in their stored dtype) and the `__metadata__` of a SafeTensors file."""
    with safe_open(path, "np") as f:
        names = f.keys()
        return {k: f.get_tensor(k) for k in names}, f.metadata() or {}


def read_apr(path: Path) -> tuple[dict[str, Stored], dict]:
    """Tensors and metadata JSON of an APR v2 file; asserts every layout rule it reads."""
    blob = path.read_bytes()
    assert blob[:4] == b"APR\0" and blob[4:6] == bytes([2, 0])
    count, meta_off, meta_size, index_off, data_off, header_crc = struct.unpack_from(
        "<IQIQQI", blob, 8
    )
    assert header_crc == zlib.crc32(blob[:40] + blob[44:64]), "header CRC"
    assert blob[44:64] == bytes(20), "reserved header bytes"
    (footer,) = struct.unpack_from("<I", blob, len(blob) - 4)
    assert footer == zlib.crc32(memoryview(blob)[:-4]), "footer CRC"
    assert meta_off == 64 and index_off == 64 + -(-meta_size // 64) * 64
    assert index_off % 64 == 0 and data_off % 64 == 0
    metadata = json.loads(blob[meta_off : meta_off + meta_size])
    tensors, at, ends, names = {}, index_off, [], []
    for _ in range(count):
        (name_len,) = struct.unpack_from("<H", blob, at)
        name = blob[at + 2 : at + 2 + name_len].decode()
        code, ndim = blob[at + 2 + name_len], blob[at + 3 + name_len]
        dims = struct.unpack_from(f"<{ndim}Q", blob, at + 4 + name_len)
        offset, size = struct.unpack_from("<QQ", blob, at + 4 + name_len + 8 * ndim)
        at += 20 + name_len + 8 * ndim
        if code in APR_ELEMENTS:
            codec, width = APR_ELEMENTS[code]
            assert size == math.prod(dims) * width, name
        else:
            qtype = Q(code - APR_GGML_BASE)
            codec = qtype.name.lower()
            assert size == _ggml_nbytes(qtype, dims), name
        assert offset % 64 == 0, name
        start = data_off + offset
        assert start + size <= len(blob) - 4, name
        tensors[name] = Stored(codec, tuple(dims), np.frombuffer(blob, np.uint8, size, start))
        ends.append(start + -(-size // 64) * 64)
        names.append(name.encode())
    assert names == sorted(names), "index sorted by name bytes"
    assert blob[at:data_off] == bytes(data_off - at), "index padding"
    assert len(blob) == max(ends, default=data_off) + 4, "file ends after the last payload"
    spans = sorted((s.data.ctypes.data, s.nbytes) for s in tensors.values() if s.nbytes)
    for (a, n), (b, _) in itertools.pairwise(spans):
        assert a + n <= b, "payloads overlap"
    return tensors, metadata


def apr_typed_metadata(metadata: dict) -> dict[str, tuple[str, object]]:
    """The `bundler.metadata` entries of an APR metadata object: key -> (TYPE, value)."""
    return {e[0]: (e[1], e[2]) for e in metadata["bundler.metadata"] if e[1] != "ARRAY"}
