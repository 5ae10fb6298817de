"""Write GGUF version 3, streaming: header, metadata and tensor infos are computed up front
from shapes and codecs, then each tensor is copied from its source a chunk at a time.

Every file this module writes passes the checks llama.cpp's C reader makes
(`gguf_rules.check_llama_rules`); a bundle that would break one is refused with a
`UsageError` unless `llama_compatible=False` is given (formats/gguf.md).
"""

from __future__ import annotations

import struct
from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np
from construct import ConstructError

from bundler.atomic import atomic_output
from bundler.bundle import CHUNK_BYTES, Tensor, Value, ValueType
from bundler.codecs.byteorder import swapped
from bundler.containers.gguf import schema as S
from bundler.containers.gguf.values import array_body, array_len, encode_str
from bundler.containers.limits import shape_problem
from bundler.errors import UsageError
from bundler.rawcopy import copy_raw

#: Keys that describe a split set; the writer sets them itself, only when it splits.
SPLIT_KEYS = ("split.no", "split.count", "split.tensors.count")
_ZEROS = bytes(1 << 16)
_BUILD = {"end": 1 << 64}


@dataclass
class FilePlan:
    """One output file: its path, its bytes up to the tensor data, and its tensors."""

    path: str
    head: bytes
    tensors: list[Tensor]
    alignment: int

    @property
    def size(self) -> int:
        """The size the file will have."""
        return len(self.head) + sum(_pad(t.nbytes, self.alignment) for t in self.tensors)


def _pad(n: int, alignment: int) -> int:
    return n + (-n % alignment)


def alignment_of(items: Iterable[tuple[str, Value]]) -> int:
    """The data alignment `general.alignment` asks for (32 when absent)."""
    for key, v in items:
        if key != S.ALIGNMENT_KEY:
            continue
        if v.type != ValueType.UINT32:
            raise UsageError(f"{S.ALIGNMENT_KEY} must be UINT32, not {v.type.name}")
        if not isinstance(v.value, int) or v.value <= 0 or v.value & (v.value - 1):
            raise UsageError(f"{S.ALIGNMENT_KEY} must be a power of two, got {v.value!r}")
        return v.value
    return S.DEFAULT_ALIGNMENT


def check_tensor(t: Tensor, llama_compatible: bool) -> int:
    """The GGML type id of `t`, or a UsageError saying why GGUF (or llama.cpp) cannot take it."""
    facts = t.codec.facts
    if facts.ggml_id is None:
        raise UsageError(
            f"tensor {t.name!r}: codec {facts.name} has no GGML type, so GGUF cannot store it"
        )
    if any(d < 0 for d in t.shape):
        raise UsageError(f"tensor {t.name!r} has a negative dimension: {t.shape}")
    problem = shape_problem(t.shape, S.MAX_DIMS_READ)
    if problem:
        raise UsageError(f"tensor {t.name!r}: GGUF readers would refuse it: {problem}")
    row = t.shape[-1] if t.shape else 1
    if row % facts.block_size:
        raise UsageError(
            f"tensor {t.name!r}: {facts.name} rows must be a multiple of {facts.block_size} "
            f"values, shape {t.shape} has {row}"
        )
    if not llama_compatible:
        return facts.ggml_id
    name_bytes = len(encode_str(t.name))
    if name_bytes > S.MAX_NAME_BYTES:
        raise UsageError(
            f"tensor name {t.name!r} is {name_bytes} bytes; llama.cpp reads at most "
            f"{S.MAX_NAME_BYTES} (pass llama_compatible=False to write it anyway)"
        )
    if len(t.shape) > S.MAX_DIMS:
        raise UsageError(
            f"tensor {t.name!r} has {len(t.shape)} dimensions; llama.cpp reads at most "
            f"{S.MAX_DIMS} (pass llama_compatible=False to write it anyway)"
        )
    return facts.ggml_id


def _check_value(key: str, v: Value, llama_compatible: bool) -> None:
    if v.type != ValueType.ARRAY:
        if v.type == ValueType.STRING and len(v.value) > S.MAX_STRING_BYTES and llama_compatible:
            raise UsageError(f"metadata {key!r}: strings longer than 1 GiB break llama.cpp")
        return
    if v.item_type == ValueType.ARRAY and llama_compatible:
        raise UsageError(
            f"metadata {key!r} is an array of arrays, which llama.cpp refuses to read "
            "(pass llama_compatible=False to write it anyway)"
        )
    if len(v.value) > S.MAX_ARRAY_ITEMS and llama_compatible:
        raise UsageError(f"metadata {key!r}: arrays of more than 2^30 items break llama.cpp")


def encode_kv(key: str, v: Value, big_endian: bool, llama_compatible: bool = True) -> bytes:
    """One key/value record."""
    if not isinstance(key, str) or not key:
        raise UsageError(f"metadata keys must be non-empty strings, got {key!r}")
    if not isinstance(v, Value):
        raise UsageError(f"metadata {key!r}: expected a typed Value, got {type(v).__name__}")
    if v.type == ValueType.STRING and not isinstance(v.value, str):
        raise UsageError(f"metadata {key!r}: STRING value is a {type(v.value).__name__}")
    if v.type == ValueType.ARRAY and not isinstance(v.value, (list, tuple, np.ndarray)):
        raise UsageError(f"metadata {key!r}: ARRAY value is a {type(v.value).__name__}")
    _check_value(key, v, llama_compatible)
    s = S.schemas(big_endian)
    kb = encode_str(key)
    rec = {"key": {"length": len(kb), "data": kb}, "type": int(v.type)}
    body = b""
    if v.type == ValueType.STRING:
        vb = encode_str(v.value)
        rec["value"] = {"length": len(vb), "data": vb}
    elif v.type == ValueType.ARRAY:
        body = array_body(v, big_endian, key)
        rec["value"] = {"item_type": int(ValueType(v.item_type)), "count": array_len(v)}
    elif v.type == ValueType.BOOL:
        rec["value"] = 1 if v.value else 0
    else:
        rec["value"] = v.value
    try:
        return s.kv.build(rec, **_BUILD) + body
    except (ConstructError, struct.error, OverflowError, TypeError, ValueError) as exc:
        raise UsageError(
            f"metadata {key!r}: {v.value!r} does not fit {v.type.name}: {exc}"
        ) from None


def file_head(
    kvs: list[tuple[str, Value]],
    tensors: list[Tensor],
    alignment: int,
    big_endian: bool,
    llama_compatible: bool,
    pad_empty: bool = True,
) -> bytes:
    """Header, key/value pairs, tensor infos and the padding before the data section."""
    s = S.schemas(big_endian)
    parts = [
        s.header.build(
            {"version": S.WRITE_VERSION, "tensor_count": len(tensors), "kv_count": len(kvs)}
        )
    ]
    parts += [encode_kv(k, v, big_endian, llama_compatible) for k, v in kvs]
    offset = 0
    for t in tensors:
        ggml_id = check_tensor(t, llama_compatible)
        nb = encode_str(t.name)
        rec = {
            "name": {"length": len(nb), "data": nb},
            "n_dims": len(t.shape),
            "dims": list(t.shape[::-1]),
            "ggml_type": ggml_id,
            "offset": offset,
        }
        parts.append(s.tensor_info.build(rec, **_BUILD))
        offset += _pad(t.nbytes, alignment)
    head = b"".join(parts)
    if tensors or pad_empty:
        head += bytes(-len(head) % alignment)
    return head


def _reads_back(path: str) -> None:
    from bundler.containers.gguf.reader import parse

    parse(path, decode=False)  # (decoding, with escapes for invalid bytes, cannot fail)


def write_file(plan: FilePlan, big_endian: bool, force: bool = True) -> None:
    """Write one planned file: the head, then every tensor (copied in the kernel when it is
    an unchanged file range, else a chunk at a time), padded."""
    with atomic_output(plan.path, force, check=_reads_back) as f:
        f.write(plan.head)
        for t in plan.tensors:
            facts = t.codec.facts
            chunk = max(facts.type_size, CHUNK_BYTES - CHUNK_BYTES % facts.type_size)
            if big_endian:
                written = 0
                for raw in t.iter_raw(chunk):
                    raw = swapped(raw, facts)
                    f.write(memoryview(raw.reshape(-1)))
                    written += raw.size
            else:
                written = copy_raw(t, f, chunk_bytes=chunk)
            if written != t.nbytes:
                raise UsageError(
                    f"tensor {t.name!r}: its source gave {written:,} bytes, "
                    f"{facts.name} {t.shape} needs {t.nbytes:,}"
                )
            pad = -written % plan.alignment
            while pad:
                step = min(pad, len(_ZEROS))
                f.write(_ZEROS[:step])
                pad -= step
