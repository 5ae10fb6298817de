"""The checks llama.cpp's C reader (ggml/src/gguf.cpp, `gguf_init_from_file`) makes, as an
independent second reader: plain `struct` parsing, nothing shared with bundler's reader.

A big-endian file is checked as a big-endian host reads it (a little-endian host's
llama.cpp refuses every big-endian file by design).
"""

from __future__ import annotations

import mmap
import os
import struct

from bundler.codecs.facts import TABLE

_GGML = {f.ggml_id: f for f in TABLE if f.ggml_id is not None}
_SCALAR_BYTES = {0: 1, 1: 1, 2: 2, 3: 2, 4: 4, 5: 4, 6: 4, 7: 1, 10: 8, 11: 8, 12: 8}
_STRING, _ARRAY, _UINT32 = 8, 9, 4
_MAX_STRING = 1 << 30
_MAX_ARRAY = 1 << 30
_MAX_NAME = 64  # GGML_MAX_NAME, terminator included
_MAX_DIMS = 4
_TYPE_COUNT = 43  # GGML_TYPE_COUNT of the llama.cpp these rules come from


class _Stop(Exception):
    """Parsing cannot go on."""


class _Cursor:
    def __init__(self, data: mmap.mmap, fmt: str):
        self.data = data
        self.pos = 0
        self.fmt = fmt

    def take(self, n: int, what: str) -> bytes:
        if n > len(self.data) - self.pos:
            raise _Stop(
                f"{what}: needs {n:,} bytes at {self.pos:,}, file ends at {len(self.data):,}"
            )
        out = self.data[self.pos : self.pos + n]
        self.pos += n
        return out

    def num(self, code: str, what: str) -> int:
        size = struct.calcsize(code)
        return struct.unpack(self.fmt + code, self.take(size, what))[0]

    def string(self, what: str) -> bytes:
        n = self.num("Q", what)
        if n > _MAX_STRING:
            raise _Stop(f"{what}: string of {n:,} bytes is over llama.cpp's 1 GiB limit")
        return self.take(n, what)


def check_llama_rules(path: str | os.PathLike[str]) -> list[str]:
    """Every rule of llama.cpp's GGUF reader that the file at `path` breaks (empty: none)."""
    problems: list[str] = []
    with open(path, "rb") as f:
        if os.fstat(f.fileno()).st_size == 0:
            return ["the file is empty"]
        with mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as data:
            try:
                _check(data, problems)
            except _Stop as exc:
                problems.append(str(exc))
    return problems


def _check(data: mmap.mmap, problems: list[str]) -> None:
    if data[:4] != b"GGUF":
        raise _Stop("magic is not GGUF")
    if len(data) < 8:
        raise _Stop("no version")
    (version,) = struct.unpack("<I", data[4:8])
    fmt = ">" if version & 0xFFFF == 0 else "<"
    c = _Cursor(data, fmt)
    c.pos = 4
    version = c.num("I", "version")
    if version not in (2, 3):
        raise _Stop(f"version {version} is not 2 or 3")
    n_tensors = c.num("q", "tensor count")
    n_kv = c.num("q", "kv count")
    if n_tensors < 0 or n_kv < 0:
        raise _Stop("negative count")
    keys: dict[str, tuple[int, int]] = {}
    for i in range(n_kv):
        key = c.string(f"key {i}").decode("utf-8", "replace")
        if not key:
            problems.append(f"key {i} is empty")
        if key in keys:
            problems.append(f"duplicate key {key!r}")
        vtype = c.num("I", f"type of {key!r}")
        count, is_array = 1, False
        if vtype == _ARRAY:
            is_array = True
            vtype = c.num("I", f"item type of {key!r}")
            count = c.num("Q", f"count of {key!r}")
            if count > _MAX_ARRAY:
                raise _Stop(f"{key!r}: array of {count:,} items is over llama.cpp's 2^30 limit")
        if vtype == _ARRAY:
            raise _Stop(f"{key!r} is a nested array, which llama.cpp rejects")
        value = None
        if vtype == _STRING:
            for _ in range(count):
                c.string(f"value of {key!r}")
        elif vtype in _SCALAR_BYTES:
            raw = c.take(_SCALAR_BYTES[vtype] * count, f"value of {key!r}")
            if vtype == _UINT32 and not is_array:
                value = struct.unpack(fmt + "I", raw)[0]
        else:
            raise _Stop(f"{key!r} has invalid value type {vtype}")
        keys[key] = (vtype if not is_array else _ARRAY, value)
    alignment = 32
    if "general.alignment" in keys:
        vtype, value = keys["general.alignment"]
        if vtype != _UINT32:
            raise _Stop("general.alignment is not UINT32")
        alignment = value
        if alignment == 0 or alignment & (alignment - 1):
            raise _Stop(f"alignment {alignment} is not a power of two")
    names: set[str] = set()
    sizes: list[tuple[str, int, int]] = []
    for i in range(n_tensors):
        raw_name = c.string(f"tensor {i} name")
        name = raw_name.decode("utf-8", "replace")
        if len(raw_name) >= _MAX_NAME:
            raise _Stop(f"tensor name {name!r} is {len(raw_name)} bytes (at most 63)")
        if name in names:
            raise _Stop(f"duplicate tensor name {name!r}")
        names.add(name)
        n_dims = c.num("I", f"{name!r} n_dims")
        if n_dims > _MAX_DIMS:
            raise _Stop(f"tensor {name!r} has {n_dims} dimensions (at most 4)")
        ne = [c.num("q", f"{name!r} ne[{j}]") for j in range(n_dims)] + [1] * (4 - n_dims)
        if any(n < 0 for n in ne):
            raise _Stop(f"tensor {name!r} has a negative dimension")
        total = 1
        for n in ne:
            total *= n
        if total >= 1 << 63:
            raise _Stop(f"tensor {name!r} has more than INT64_MAX elements")
        gtype = c.num("i", f"{name!r} type")
        facts = _GGML.get(gtype)
        if gtype < 0 or gtype >= _TYPE_COUNT or facts is None:
            raise _Stop(f"tensor {name!r} has invalid (or removed) ggml type {gtype}")
        if ne[0] % facts.block_size:
            raise _Stop(f"tensor {name!r}: ne[0]={ne[0]} not a multiple of {facts.block_size}")
        offset = c.num("Q", f"{name!r} offset")
        sizes.append((name, offset, total // facts.block_size * facts.type_size))
    if n_tensors == 0:
        return
    data_start = c.pos + (-c.pos % alignment)
    if data_start > len(data):
        raise _Stop(f"data section starts at {data_start:,}, past the end of the file")
    expected = 0
    for name, offset, nbytes in sizes:
        if offset != expected:
            problems.append(f"tensor {name!r} has offset {offset:,}, expected {expected:,}")
        expected += nbytes + (-nbytes % alignment)
    if data_start + expected > len(data):
        problems.append(
            f"data section needs {expected:,} bytes from {data_start:,}, file is {len(data):,}"
        )
