"""A structure-aware fuzzer of model-file headers: field-level lies in every format.

Each format's seed (a conformance file) is walked independently of bundler's readers to
list its fields (counts, lengths, dimensions, offsets, value types, typed-metadata
entries, shard-index entries); a case changes one or two fields to a boundary value and,
for APR, recomputes both CRCs so the lie reaches the deep checks. `run_case` opens the
result the way a user would and classifies what happened.
"""

from __future__ import annotations

import copy
import json
import os
import random
import shutil
import struct
import time
import tracemalloc
import warnings
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import bundler
from bundler.errors import BundlerError, FormatError

CONFORMANCE = Path(__file__).parents[2] / "formats" / "conformance"

#: Values that sit on a boundary of some check.
BOUNDARY = [0, 1, 2, 3, 7, 8, 31, 32, 33, 63, 64, 65, 255, 256, 2**16 - 1, 2**31 - 1, 2**31,
            2**32 - 1, 2**32, 2**53, 2**59, 2**62, 2**63 - 1, 2**63, 2**64 - 1]  # fmt: skip


def _near(rng: random.Random, value: int, bits: int) -> int:
    choice = rng.random()
    if choice < 0.5:
        v = rng.choice(BOUNDARY)
    elif choice < 0.8:
        v = value + rng.choice([-2, -1, 1, 2, 8, -8, 64])
    else:
        v = rng.getrandbits(bits)
    return v % (1 << bits)


# ------------------------------------------------------------------------------ GGUF


@dataclass
class Field:
    offset: int
    fmt: str  # struct code: I or Q (or B/H for APR)
    kind: str


def dimension_fields(fields: list[Field], pos: int, n: int, fmt: str) -> int:
    """Add the `n` 8-byte dimensions at `pos` to `fields`; the position after them."""
    fields.extend(Field(pos + 8 * d, fmt, "dimension") for d in range(n))
    return pos + 8 * n


def gguf_fields(data: bytes) -> list[Field]:
    """Every count, length, type, dimension and offset field of a GGUF file."""
    big = data[4:8] != b"\x03\x00\x00\x00" and data[4:8] != b"\x02\x00\x00\x00"
    e = ">" if big else "<"
    fields = [Field(8, "Q", "tensor_count"), Field(16, "Q", "kv_count")]
    n_tensors, n_kv = struct.unpack_from(e + "QQ", data, 8)
    pos = 24

    def string(kind: str) -> None:
        nonlocal pos
        fields.append(Field(pos, "Q", kind))
        (n,) = struct.unpack_from(e + "Q", data, pos)
        pos += 8 + n

    def value(t: int, kind: str) -> None:
        nonlocal pos
        sizes = {0: 1, 1: 1, 2: 2, 3: 2, 4: 4, 5: 4, 6: 4, 7: 1, 10: 8, 11: 8, 12: 8}
        if t == 8:
            string(f"{kind} string length")
        elif t == 9:
            fields.append(Field(pos, "I", f"{kind} array item type"))
            fields.append(Field(pos + 4, "Q", f"{kind} array count"))
            item, count = struct.unpack_from(e + "IQ", data, pos)
            pos += 12
            for _ in range(count):
                value(item, kind + "[]")
        else:
            if t == 4 and kind == "kv value":
                fields.append(Field(pos, "I", "u32 value"))
            pos += sizes[t]

    for _ in range(n_kv):
        string("key length")
        fields.append(Field(pos, "I", "value type"))
        (t,) = struct.unpack_from(e + "I", data, pos)
        pos += 4
        value(t, "kv value")
    for _ in range(n_tensors):
        string("tensor name length")
        fields.append(Field(pos, "I", "n_dims"))
        (n,) = struct.unpack_from(e + "I", data, pos)
        pos += 4
        pos = dimension_fields(fields, pos, n, "Q")
        fields.append(Field(pos, "I", "ggml type"))
        fields.append(Field(pos + 4, "Q", "tensor offset"))
        pos += 12
    for f in fields:
        f.fmt = e + f.fmt
    return fields


def mutate_fields(data: bytes, fields: list[Field], rng: random.Random, n: int) -> bytes:
    out = bytearray(data)
    for f in rng.sample(fields, min(n, len(fields))):
        (old,) = struct.unpack_from(f.fmt, out, f.offset)
        bits = struct.calcsize(f.fmt) * 8
        if "type" in f.kind and rng.random() < 0.6:
            new = rng.choice([0, 1, 6, 7, 8, 9, 10, 12, 13, 30, 200, 2**32 - 1]) % (1 << bits)
        else:
            new = _near(rng, old, bits)
        struct.pack_into(f.fmt, out, f.offset, new)
    return bytes(out)


# ------------------------------------------------------------------------------ typed JSON

TYPE_NAMES = ["UINT8", "INT8", "UINT16", "INT32", "UINT64", "INT64", "FLOAT32", "FLOAT64",
              "BOOL", "STRING", "ARRAY", "NOPE", 7, None]  # fmt: skip
ODD_VALUES = [True, False, 1.5, -1, 2**64, 300, "x", "nan", None, [], [[]], [1, 2], [[1, 2]],
              {"a": 1}, ["ARRAY"], ["UINT8", 1], ["ARRAY", "UINT8", [1]], 2**63]  # fmt: skip


def mutate_typed_entries(entries: list, rng: random.Random) -> list:
    """One field-level lie in a typed-metadata entry list (formats/safetensors.md)."""
    entries = copy.deepcopy(entries)
    if not entries or rng.random() < 0.1:
        entries.append(["k", rng.choice(TYPE_NAMES), rng.choice(ODD_VALUES)])
        return entries
    i = rng.randrange(len(entries))
    entry = entries[i]
    choice = rng.randrange(6)
    if choice == 0 and len(entry) > 1:
        entry[1] = rng.choice(TYPE_NAMES)
    elif choice == 1:
        entry[-1] = rng.choice(ODD_VALUES)
    elif choice == 2:
        entry[:] = entry[: rng.randrange(len(entry) + 1)]
    elif choice == 3 and isinstance(entry[-1], list):
        entry[-1].append(rng.choice(ODD_VALUES))
    elif choice == 4:
        entries.append(copy.deepcopy(entry))  # duplicate key
    else:
        entries[i] = rng.choice(ODD_VALUES)
    return entries


# ------------------------------------------------------------------------------ SafeTensors

DTYPES = ["F32", "F16", "BF16", "U8", "I64", "F4", "F8_E4M3", "Q4_0", "f32", ["F32"], {}, 4]


def _st_split(data: bytes) -> tuple[dict, bytes]:
    n = int.from_bytes(data[:8], "little")
    return json.loads(data[8 : 8 + n]), data[8 + n :]


def _st_join(header: dict, body: bytes) -> bytes:
    raw = json.dumps(header, separators=(",", ":")).encode()
    return struct.pack("<Q", len(raw)) + raw + body


def mutate_safetensors(data: bytes, rng: random.Random) -> bytes:
    header, body = _st_split(data)
    names = [k for k in header if k != "__metadata__"]
    md = header.get("__metadata__") or {}
    choice = rng.randrange(8)
    if choice <= 4 and names:
        entry = header[rng.choice(names)]
        if choice == 0:
            entry["dtype"] = rng.choice(DTYPES)
        elif choice == 1:
            shape = entry["shape"]
            op = rng.randrange(4)
            if op == 0 and shape:
                shape[rng.randrange(len(shape))] = rng.choice([*BOUNDARY, -1, 1.5])
            elif op == 1:
                shape.append(rng.choice([0, 1, 2**62]))
            elif op == 2:
                entry["shape"] = [1] * rng.choice([33, 65]) + shape
            else:
                entry["shape"] = [rng.choice([0, 2**62, 2**63]), 0]
                entry["data_offsets"] = [0, 0]
        elif choice == 2:
            k = rng.randrange(2)
            entry["data_offsets"][k] = _near(rng, entry["data_offsets"][k], 64)
        elif choice == 3:
            del entry[rng.choice(["dtype", "shape", "data_offsets"])]
        else:
            entry[rng.choice(["shape", "data_offsets"])] = rng.choice(ODD_VALUES)
    elif choice <= 6 and "bundler.metadata" in md:
        key = "bundler.metadata" if choice == 5 else "bundler.tensors"
        try:
            value = json.loads(md[key])
        except (KeyError, ValueError):
            value = None
        if isinstance(value, list) and key == "bundler.metadata":
            md[key] = json.dumps(mutate_typed_entries(value, rng))
        elif isinstance(value, dict) and value:
            name = rng.choice(list(value))
            value[name] = rng.choice([*ODD_VALUES, ["q4_0", [2**62, 0]], ["nope", [32]]])
            md[key] = json.dumps(value)
        else:
            md[key] = rng.choice(["", "[", "{}", "[[]]"])
    else:
        header["__metadata__"] = rng.choice([{"a": 1}, [], {"bundler.metadata": "[]"}, None])
    return _st_join(header, body)


def mutate_index(directory: Path, rng: random.Random) -> None:
    """One lie in a sharded checkpoint's index (its weight_map or metadata)."""
    index = directory / "model.safetensors.index.json"
    obj = json.loads(index.read_text())
    wm = obj["weight_map"]
    name = rng.choice(list(wm))
    choice = rng.randrange(5)
    if choice == 0:
        wm[name] = rng.choice([*list(set(wm.values())), "missing.safetensors", "../x", 3])
    elif choice == 1:
        del wm[name]
    elif choice == 2:
        wm["extra.weight"] = rng.choice(list(wm.values()))
    elif choice == 3:
        obj["weight_map"] = rng.choice([[], {}, None, "x"])
    else:
        shard = directory / rng.choice(sorted(set(wm.values())))
        shard.write_bytes(mutate_safetensors(shard.read_bytes(), rng))
    index.write_text(json.dumps(obj))


# ------------------------------------------------------------------------------ APR

HEADER = struct.Struct("<4sBBHIQIQQI20s")


def apr_fields(data: bytes) -> list[Field]:
    """Header and index-entry fields of an APR v2 file."""
    fields = [
        Field(8, "<I", "tensor_count"),
        Field(12, "<Q", "metadata_offset"),
        Field(20, "<I", "metadata_size"),
        Field(24, "<Q", "tensor_index_offset"),
        Field(32, "<Q", "data_offset"),
        Field(6, "<H", "flags"),
    ]
    h = HEADER.unpack_from(data)
    count, pos = h[4], h[7]
    for _ in range(count):
        fields.append(Field(pos, "<H", "name length"))
        (n,) = struct.unpack_from("<H", data, pos)
        pos += 2 + n
        fields.append(Field(pos, "<B", "dtype type"))
        fields.append(Field(pos + 1, "<B", "ndim"))
        ndim = data[pos + 1]
        pos += 2
        pos = dimension_fields(fields, pos, ndim, "<Q")
        fields.append(Field(pos, "<Q", "tensor offset"))
        fields.append(Field(pos + 8, "<Q", "tensor size"))
        pos += 16
    return fields


def apr_recrc(data: bytes) -> bytes:
    """The file with its header CRC and footer CRC recomputed."""
    out = bytearray(data)
    struct.pack_into("<I", out, 40, zlib.crc32(bytes(out[:40] + out[44:64])))
    body = bytes(out[:-4])
    return body + struct.pack("<I", zlib.crc32(body))


def mutate_apr(data: bytes, rng: random.Random) -> bytes:
    h = HEADER.unpack_from(data)
    meta_at, meta_size = h[5], h[6]
    meta = data[meta_at : meta_at + meta_size]
    if rng.random() < 0.3 and b"bundler.metadata" in meta:
        obj = json.loads(meta)
        obj["bundler.metadata"] = mutate_typed_entries(obj["bundler.metadata"], rng)
        new = json.dumps(obj, separators=(",", ":")).encode()
        room = h[7] - meta_at
        if len(new) <= room:
            out = bytearray(data)
            out[meta_at : meta_at + room] = new.ljust(room, b"\0")
            struct.pack_into("<I", out, 20, len(new))
            return apr_recrc(bytes(out))
    fields = apr_fields(data)
    return apr_recrc(mutate_fields(data, fields, rng, rng.choice([1, 1, 2])))


# ------------------------------------------------------------------------------ cases


def seeds() -> dict[str, list[Path]]:
    return {
        fmt: sorted((CONFORMANCE / fmt).glob(f"*.{fmt}")) for fmt in ("gguf", "safetensors", "apr")
    }


def make_case(fmt: str, seed: Path, rng: random.Random, workdir: Path, i: int) -> Path:
    """Write one mutated file (or sharded directory) derived from `seed`; returns its path."""
    if fmt == "safetensors-index":
        target = workdir / f"case{i}"
        shutil.copytree(seed, target)
        mutate_index(target, rng)
        return target / "model.safetensors.index.json"
    data = seed.read_bytes()
    if fmt == "gguf":
        fields = gguf_fields(data)
        data = mutate_fields(data, fields, rng, rng.choice([1, 1, 1, 2]))
    elif fmt == "gguf-split":  # the whole set beside the case, one shard lying
        shards = sorted(seed.parent.glob("*.gguf"))
        for shard in shards:
            shutil.copy(shard, workdir / shard.name)
        victim = workdir / rng.choice(shards).name
        raw = victim.read_bytes()
        victim.write_bytes(mutate_fields(raw, gguf_fields(raw), rng, 1))
        return workdir / seed.name
    elif fmt == "safetensors":
        data = mutate_safetensors(data, rng)
    else:
        data = mutate_apr(data, rng)
    ext = fmt.split("-")[0]
    path = workdir / f"case{i}.{ext}"
    path.write_bytes(data)
    return path


@dataclass
class Outcome:
    kind: str  # read | refused:<Error> | untyped | silent-accept | convert-unreadable
    detail: str = ""
    seconds: float = 0.0
    peak_bytes: int = 0


def run_case(path: Path, workdir: Path) -> Outcome:
    """Open, list and materialize `path`; when it reads, validate and convert it, reopen
    the output and compare tensors byte for byte."""
    start = time.perf_counter()
    tracemalloc.start()
    try:
        outcome = _classify(path, workdir)
        outcome.peak_bytes = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    outcome.seconds = time.perf_counter() - start
    return outcome


def _classify(path: Path, workdir: Path) -> Outcome:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            b = bundler.open(path)
        except FormatError as exc:
            if exc.path is None:
                return Outcome("untyped", f"FormatError without a path: {exc}")
            return Outcome(f"refused:{type(exc).__name__}", exc.problem)
        except Exception as exc:  # a broken file is a FormatError naming it, nothing else
            return Outcome("untyped", f"{type(exc).__name__}: {exc}")
        try:
            list(b.metadata.typed_items())
            raws = {name: t.raw().tobytes() for name, t in b.tensors.items()}
            for t in b.tensors.values():
                if t.codec.facts.block_size == 1 and t.nbytes < (1 << 20):
                    t.numpy()
        except Exception as exc:
            return Outcome("silent-accept", f"{type(exc).__name__}: {exc}")
        if path.suffix == ".safetensors" and not _reference_reads(path):
            return Outcome("silent-accept", "the reference safetensors reader refuses it")
        return _convert_round_trip(path, b, raws, workdir)


def _reference_reads(path: Path) -> bool:
    import safetensors

    try:
        with safetensors.safe_open(str(path), framework="np") as f:
            for key in f.keys():  # noqa: SIM118 - safe_open is not iterable
                f.get_slice(key)
    except Exception:
        return False
    return True


def _convert_round_trip(path: Path, b: Any, raws: dict[str, bytes], workdir: Path) -> Outcome:
    from bundler.pipeline import convert
    from bundler.validate import validate

    try:
        validate(path)
    except Exception as exc:
        return Outcome("silent-accept", f"validate: {type(exc).__name__}: {exc}")
    for to in ("gguf", "safetensors", "apr"):
        out = workdir / f"out.{to}"
        try:
            report = convert(path, out, format=to, force=True)
        except BundlerError:
            continue  # a typed refusal (a codec the target cannot store, a name too long)
        except Exception as exc:
            return Outcome("untyped", f"convert to {to}: {type(exc).__name__}: {exc}")
        try:
            index = [p for p in report.outputs if p.endswith(".json")]
            again = bundler.open(index[0] if index else report.outputs[0])
            got = {name: t.raw().tobytes() for name, t in again.tensors.items()}
        except Exception as exc:
            return Outcome("convert-unreadable", f"{to}: {type(exc).__name__}: {exc}")
        finally:
            for p in workdir.glob("out*"):
                shutil.rmtree(p) if p.is_dir() else os.unlink(p)
        if got != raws:
            return Outcome("convert-unreadable", f"{to}: tensors differ after the round trip")
    return Outcome("read")
