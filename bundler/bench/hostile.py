"""`bundler bench hostile`: parse cost of headers built to amplify work and memory.

Each case is a small file whose header asks for much (issue 18's amplification cases):
two million empty nested GGUF arrays, hundreds of thousands of zero-size tensors in GGUF
and SafeTensors, a long APR metadata array. Each is opened in a fresh subprocess; the
wall time, tracemalloc peak and resident-set growth are reported per header megabyte,
with the outcome (read, or the typed error and its message).
"""

from __future__ import annotations

import json
import os
import struct
import subprocess
import sys
import tempfile
from collections.abc import Callable
from typing import Any

MIB = 1 << 20


# ------------------------------------------------------------------------------ generators


def _gguf_string(s: str) -> bytes:
    b = s.encode()
    return struct.pack("<Q", len(b)) + b


def gguf_nested_arrays(path: str, count: int) -> None:
    """A GGUF whose one key holds `count` empty UINT8 arrays (12 bytes each)."""
    body = struct.pack("<IQ", 0, 0) * count
    kv = _gguf_string("nested") + struct.pack("<IIQ", 9, 9, count) + body
    with open(path, "wb") as f:
        f.write(b"GGUF" + struct.pack("<IQQ", 3, 0, 1) + kv)


def gguf_zero_tensors(path: str, count: int) -> None:
    """A GGUF of `count` zero-size F32 tensors, all at data offset 0."""
    infos = b"".join(_gguf_string(f"t{i}") + struct.pack("<IQIQ", 1, 0, 0, 0) for i in range(count))
    head = b"GGUF" + struct.pack("<IQQ", 3, count, 0) + infos
    with open(path, "wb") as f:
        f.write(head + bytes(-len(head) % 32))


def safetensors_zero_tensors(path: str, count: int) -> None:
    """A SafeTensors file of `count` zero-size F32 tensors."""
    entry = {"dtype": "F32", "shape": [0], "data_offsets": [0, 0]}
    header = json.dumps({f"t{i}": entry for i in range(count)}, separators=(",", ":"))
    raw = header.encode()
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(raw)) + raw)


def safetensors_many_dims(path: str, count: int) -> None:
    """A SafeTensors file of `count` zero-size F32 tensors of 32 dimensions each (the most
    allowed): the header spends the fewest bytes per stored dimension."""
    entry = {"dtype": "F32", "shape": [1] * 31 + [0], "data_offsets": [0, 0]}
    header = json.dumps({f"t{i}": entry for i in range(count)}, separators=(",", ":"))
    raw = header.encode()
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(raw)) + raw)


def apr_long_array(path: str, count: int) -> None:
    """An APR file with no tensors whose metadata holds one array of `count` zeros."""
    _apr_file(path, b'{"zeros":[' + b",".join([b"0"] * count) + b"]}", 0, b"")


def apr_zero_tensors(path: str, count: int) -> None:
    """An APR file of `count` zero-size F32 tensors, all at data offset 0."""
    entry = struct.pack("<BBQQQ", 0, 1, 0, 0, 0)  # F32, one dimension of 0, offset, size
    index = b"".join(_apr_name(f"t{i:07d}") + entry for i in range(count))
    _apr_file(path, b"{}", count, index)


def _apr_name(name: str) -> bytes:
    b = name.encode()
    return struct.pack("<H", len(b)) + b


def _apr_file(path: str, meta: bytes, tensor_count: int, index: bytes) -> None:
    import zlib

    from bundler.containers.apr.crc import header_crc
    from bundler.containers.apr.schema import HEADER_COMPILED, align

    index_at = align(64 + len(meta))
    data_at = align(index_at + len(index))
    head = {
        "magic": b"APR\0", "major": 2, "minor": 0, "flags": 0, "tensor_count": tensor_count,
        "metadata_offset": 64, "metadata_size": len(meta), "tensor_index_offset": index_at,
        "data_offset": data_at, "header_crc": 0, "reserved": bytes(20),
    }  # fmt: skip
    head["header_crc"] = header_crc(HEADER_COMPILED.build(head))
    body = HEADER_COMPILED.build(head) + meta
    body += bytes(index_at - len(body)) + index
    body += bytes(data_at - len(body))
    with open(path, "wb") as f:
        f.write(body + struct.pack("<I", zlib.crc32(body)))


#: name -> (generator, count, file extension): the sizes of issue 18 (and a worst case of
#: the tensor tables: the most dimensions per header byte).
CASES: dict[str, tuple[Callable[[str, int], None], int, str]] = {
    "gguf-nested-arrays": (gguf_nested_arrays, 2_000_000, "gguf"),
    "gguf-zero-tensors": (gguf_zero_tensors, 800_000, "gguf"),
    "safetensors-zero-tensors": (safetensors_zero_tensors, 1_500_000, "safetensors"),
    "safetensors-many-dims": (safetensors_many_dims, 500_000, "safetensors"),
    "apr-long-array": (apr_long_array, 25_000_000, "apr"),
    "apr-zero-tensors": (apr_zero_tensors, 800_000, "apr"),
}

_PROBE = r"""
import json, resource, sys, time, tracemalloc
import bundler
import bundler.containers as formats
from bundler.errors import BundlerError
for name in formats.formats():  # every reader imported before anything is measured
    formats.module(name)
path = sys.argv[1]
rss0 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
tracemalloc.start()
start = time.perf_counter()
try:
    b = bundler.open(path)
    # every tensor's name, shape and codec is asked for, one at a time (as a listing prints)
    listed = sum(1 for t in b.tensors.values() if (t.name, t.shape, t.codec.name))
    outcome, message = "read", f"{listed} tensors, {len(b.metadata)} keys"
except BundlerError as exc:
    outcome, message = type(exc).__name__, str(exc)[:200]
seconds = time.perf_counter() - start
peak = tracemalloc.get_traced_memory()[1]
rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - rss0
print(json.dumps({"outcome": outcome, "message": message, "seconds": seconds,
                  "peak_bytes": peak, "rss_growth_bytes": rss * 1024}))
"""


def measure(path: str) -> dict[str, Any]:
    """Open and list `path` in a fresh interpreter: time, memory and outcome."""
    out = subprocess.run(
        [sys.executable, "-c", _PROBE, path], capture_output=True, text=True, check=False
    )
    if out.returncode:
        return {"outcome": "crash", "message": out.stderr.strip()[-300:]}
    return json.loads(out.stdout)


def run(cases: list[str], scale: float = 1.0, workdir: str | None = None) -> list[dict[str, Any]]:
    """Build each case (its count times `scale`) and measure opening it."""
    from bundler.errors import UsageError

    unknown = [name for name in cases if name not in CASES]
    if unknown or scale <= 0:
        what = f"unknown case(s) {', '.join(unknown)}" if unknown else f"scale {scale}"
        raise UsageError(f"{what}; cases: {', '.join(CASES)}; scale must be positive")
    rows = []
    with tempfile.TemporaryDirectory(dir=workdir) as tmp:
        for name in cases:
            make, count, ext = CASES[name]
            count = max(1, int(count * scale))
            path = os.path.join(tmp, f"{name}.{ext}")
            make(path, count)
            size = os.path.getsize(path)
            row = {"case": name, "count": count, "file_bytes": size, **measure(path)}
            mb = size / MIB
            if "seconds" in row:
                row["seconds_per_mib"] = row["seconds"] / mb
                row["peak_mib_per_mib"] = row["peak_bytes"] / MIB / mb
                row["rss_mib_per_mib"] = row["rss_growth_bytes"] / MIB / mb
            rows.append(row)
            os.unlink(path)
    return rows
