"""APR v2 writing: header, metadata and index computed up front, then each tensor's stored
bytes streamed chunk by chunk with the running CRC."""

from __future__ import annotations

import os
import warnings
import zlib
from typing import Any, BinaryIO

import numpy as np

from bundler.atomic import atomic_output
from bundler.bundle import Bundle, Tensor
from bundler.codecs import get
from bundler.codecs.facts import APRENDER_CODECS
from bundler.containers import typed_json
from bundler.containers.apr import metadata as apr_metadata
from bundler.containers.apr import schema as S
from bundler.containers.apr.crc import header_crc
from bundler.containers.apr.details import AprDetails
from bundler.errors import (
    AprCompatibilityWarning,
    UsageError,
)


def write(
    bundle: Bundle,
    path: str | os.PathLike[str],
    *,
    aprender: bool = False,
    force: bool = True,
    **options: Any,
) -> None:
    """Write `bundle` as APR v2.

    With `aprender=True` refuse (UsageError) anything aprender itself cannot read; otherwise
    warn (AprCompatibilityWarning) when the file uses this project's extension codes.
    """
    if options:
        raise UsageError(f"unknown APR write options: {', '.join(sorted(options))}")
    tensors = list(bundle.tensors.values())
    if len(tensors) > 0xFFFFFFFF:
        raise UsageError(f"{len(tensors):,} tensors; APR allows at most 2^32 - 1")
    _check_tensors(tensors)
    _check_compatibility(tensors, aprender)
    meta = _metadata_bytes(bundle, tensors)
    if len(meta) > S.APRENDER_MAX_METADATA:
        message = (
            f"the metadata JSON is {len(meta):,} bytes; aprender reads at most "
            f"{S.APRENDER_MAX_METADATA:,}"
        )
        if aprender:
            raise UsageError(message)
        warnings.warn(message, AprCompatibilityWarning, stacklevel=2)
    if len(meta) > S.MAX_METADATA_BYTES:
        raise UsageError(
            f"the metadata JSON is {len(meta):,} bytes; APR readers here take at most "
            f"{S.MAX_METADATA_BYTES:,}"
        )

    offsets, cursor = [], 0
    for t in tensors:
        offsets.append(cursor)
        cursor += S.align(t.nbytes)
    index = b"".join(
        _entry_bytes(t, off)
        for t, off in sorted(zip(tensors, offsets, strict=True), key=lambda p: p[0].name.encode())
    )
    index_offset = S.HEADER_SIZE + S.align(len(meta))
    data_offset = index_offset + S.align(len(index))
    header = _header_bytes(_flags(bundle), len(tensors), len(meta), index_offset, data_offset)

    with atomic_output(path, force=force, check=_reads_back) as f:
        out = _CrcWriter(f)
        out.write(header)
        out.write(meta)
        out.pad(len(meta))
        out.write(index)
        out.pad(len(index))
        for t in tensors:
            out.pad(_copy_tensor(out, t))
        f.write(out.crc.to_bytes(4, "little"))


class _CrcWriter:
    """A file writer that keeps the CRC32 of everything written."""

    def __init__(self, f: BinaryIO):
        self.f = f
        self.crc = 0

    def write(self, data: Any) -> None:
        self.f.write(data)
        self.crc = zlib.crc32(data, self.crc)

    def pad(self, n: int) -> None:
        extra = S.align(n) - n
        if extra:
            self.write(bytes(extra))


def _copy_tensor(out: _CrcWriter, t: Tensor) -> int:
    want = t.nbytes
    done = 0
    for chunk in t.iter_raw():
        data = np.ascontiguousarray(chunk).view(np.uint8).reshape(-1)
        done += data.size
        if done > want:
            break
        out.write(memoryview(data))
    if done != want:
        raise UsageError(
            f"tensor {t.name!r}: its source holds {'more than ' if done > want else ''}"
            f"{done:,} bytes but {t.codec.name} {t.shape} needs {want:,}"
        )
    return done


def _reads_back(path: str) -> None:
    from bundler.containers.apr.reader import read

    read(path, verify_footer=False)


def _check_tensors(tensors: list[Tensor]) -> None:
    for t in tensors:
        if t.codec.facts.apr_code is None:
            raise UsageError(
                f"tensor {t.name!r}: codec {t.codec.name} has no APR dtype code, so it "
                "cannot be stored in an APR file"
            )
        if len(t.name.encode("utf-8")) > S.MAX_NAME_BYTES:
            raise UsageError(
                f"tensor name {t.name[:40]!r}... is {len(t.name.encode()):,} bytes; APR "
                f"allows at most {S.MAX_NAME_BYTES}"
            )
        if len(t.shape) > S.MAX_NDIM:
            raise UsageError(
                f"tensor {t.name!r} has {len(t.shape)} dimensions; APR allows at most {S.MAX_NDIM}"
            )


def non_native(tensors: list[Tensor]) -> dict[str, list[str]]:
    """Tensors whose codec aprender cannot read, grouped by codec name."""
    found: dict[str, list[str]] = {}
    for t in tensors:
        if not t.codec.facts.apr_native:
            found.setdefault(t.codec.name, []).append(t.name)
    return found


def _describe(found: dict[str, list[str]]) -> str:
    parts = []
    for codec, names in found.items():
        shown = ", ".join(repr(n) for n in names[:5])
        more = f" and {len(names) - 5} more" if len(names) > 5 else ""
        parts.append(f"{codec} (APR code {get(codec).facts.apr_code}): {shown}{more}")
    return "; ".join(parts)


def _check_compatibility(tensors: list[Tensor], aprender: bool) -> None:
    found = non_native(tensors)
    if not found:
        return
    detail = _describe(found)
    if aprender:
        raise UsageError(
            f"aprender cannot read these tensors (it knows {', '.join(APRENDER_CODECS)}): "
            f"{detail}; convert them to one of those codecs"
        )
    warnings.warn(
        f"this APR file uses this project's dtype codes, which aprender cannot read: {detail}"
        "; `validate --strict` will reject it. For a file aprender reads, quantize to one of "
        "its codecs (--type apr_q4, apr_q8, q4_k or q6_k); --aprender (aprender=True) "
        "refuses the others",
        AprCompatibilityWarning,
        stacklevel=3,
    )


def _metadata_bytes(bundle: Bundle, tensors: list[Tensor]) -> bytes:
    info = AprDetails.of(bundle)
    original = info.metadata_json if info else None
    if original is not None and info.metadata_snapshot == typed_json.dumps(bundle.metadata):
        return original.encode("utf-8")
    return apr_metadata.dumps(bundle.metadata, tensors)


def _flags(bundle: Bundle) -> int:
    info = AprDetails.of(bundle)
    flags = info.flags if info else 0
    flags &= S.Flags.KNOWN & ~S.Flags.COLUMN_MAJOR
    for bit, _ in S.UNREADABLE_FLAGS:
        flags &= ~bit
    return flags | S.Flags.ROW_MAJOR


def _entry_bytes(t: Tensor, offset: int) -> bytes:
    name = t.name.encode("utf-8")
    return S.INDEX_ENTRY_COMPILED.build(
        {
            "name_len": len(name),
            "name": name,
            "dtype": t.codec.facts.apr_code,
            "ndim": len(t.shape),
            "dims": list(t.shape),
            "offset": offset,
            "size": t.nbytes,
        }
    )


def _header_bytes(flags: int, count: int, meta_size: int, index_at: int, data_at: int) -> bytes:
    fields = {
        "magic": S.MAGIC,
        "major": S.VERSION[0],
        "minor": S.VERSION[1],
        "flags": flags,
        "tensor_count": count,
        "metadata_offset": S.HEADER_SIZE,
        "metadata_size": meta_size,
        "tensor_index_offset": index_at,
        "data_offset": data_at,
        "header_crc": 0,
        "reserved": bytes(20),
    }
    fields["header_crc"] = header_crc(S.HEADER_COMPILED.build(fields))
    return S.HEADER_COMPILED.build(fields)
