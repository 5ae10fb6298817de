"""Hostile SafeTensors input: every problem is a FormatError naming the file, the byte offset
and the problem, found from the header alone, with no allocation a lying length asks for."""

from __future__ import annotations

import json
import struct
import tracemalloc

import numpy as np
import pytest

from bundler.bundle import Bundle, Tensor
from bundler.containers import safetensors as stf
from bundler.errors import FormatError, TruncatedError

T = '"a":{"dtype":"U8","shape":[2],"data_offsets":[0,2]}'


def _file(header: str | bytes, data: bytes = b"", n: int | None = None) -> bytes:
    body = header.encode("utf-8", "surrogatepass") if isinstance(header, str) else header
    return struct.pack("<Q", len(body) if n is None else n) + body + data


def _read_error(tmp_path, data: bytes, name: str = "bad.safetensors") -> FormatError:
    path = tmp_path / name
    path.write_bytes(data)
    with pytest.raises(FormatError) as err:
        stf.read(path)
    assert err.value.path == str(path)
    assert err.value.problem
    assert str(path) in str(err.value)
    return err.value


def _small_file(tmp_path) -> bytes:
    bundle = Bundle(
        {"format": "pt"},
        [
            Tensor.from_array("a", np.arange(3, dtype=np.int64)),
            Tensor.from_array("b", np.arange(2, dtype=np.float32)),
            Tensor.from_array("c", np.array(7, dtype=np.uint8)),
        ],
    )
    stf.write(bundle, tmp_path / "small.safetensors")
    return (tmp_path / "small.safetensors").read_bytes()


def test_truncation_at_every_byte_is_a_truncation_error(tmp_path):
    data = _small_file(tmp_path)
    path = tmp_path / "cut.safetensors"
    for size in range(len(data)):
        path.write_bytes(data[:size])
        with pytest.raises(FormatError) as err:
            stf.read(path)
        assert err.value.path == str(path) and err.value.offset is not None, size
        assert 0 <= err.value.offset <= len(data)
        assert isinstance(err.value, TruncatedError), (size, err.value)


@pytest.mark.parametrize("mask", [0x01, 0x20, 0x80, 0xFF])
def test_a_flipped_header_byte_is_read_or_refused_never_crashes(mask, tmp_path):
    data = _small_file(tmp_path)
    end = 8 + int.from_bytes(data[:8], "little")
    path = tmp_path / "flip.safetensors"
    refused = 0
    for i in range(end):
        flipped = bytearray(data)
        flipped[i] ^= mask
        path.write_bytes(flipped)
        try:
            bundle = stf.read(path)
        except FormatError as exc:
            assert exc.path == str(path) and exc.offset is not None and exc.problem, i
            refused += 1
            continue
        for t in bundle.tensors.values():  # what reads must also stream
            assert t.raw().size == t.nbytes
    assert refused > end // 2


HOSTILE = {
    "lying header length 2^60": (_file("{}", n=2**60), 0, "exceeds the limit"),
    "header length past the end": (_file("{}", n=4096), 8, "truncated: the header needs"),
    "header length one too large": (_file("{" + T + "}", b"xy", n=56), 8, "ends"),
    "header limit plus one": (_file("{}", n=100_000_001), 0, "exceeds the limit"),
    "empty file": (b"", 0, "truncated"),
    "seven bytes": (b"\x02\0\0\0\0\0\0", 0, "truncated"),
    "empty header": (_file(""), 8, "ends where '{"),
    "not an object": (_file("[1]"), 8, "must be a JSON object"),
    "NUL padding": (_file("{" + T + "}\0\0", b"xy"), 8 + len(T) + 2, "only spaces may pad"),
    "trailing garbage in header": (_file("{" + T + "} x", b"xy"), 8 + len(T) + 3, "after the"),
    "byte order mark": (_file(b"\xef\xbb\xbf{}"), 8, "expected '{"),
    "invalid UTF-8": (_file(b'{"\xff":1}'), 10, "not valid UTF-8"),
    "lone surrogate": (_file('{"\\ud800":' + T[4:] + "}", b"xy"), 9, "lone surrogate"),
    "NaN literal": (_file('{"__metadata__":{"k":NaN}}'), 24, "NaN is not JSON"),
    "nested too deep": (_file('{"a":' + "[" * 100_000 + "}"), 13, "invalid header JSON"),
    "huge integer": (_file('{"a":' + "9" * 5000 + "}"), 13, "invalid header JSON"),
    "unterminated string": (_file('{"a'), 9, "invalid header JSON"),
    "duplicate tensor": (_file("{" + T + "," + T + "}", b"xy"), 10 + len(T), "duplicate key"),
    "duplicate metadata key": (
        _file('{"__metadata__":{"k":"1","k":"2"}}'),
        24,
        "duplicate key",
    ),
    "metadata number": (_file('{"__metadata__":{"k":1},' + T + "}", b"xy"), 9, "must be a string"),
    "metadata object": (_file('{"__metadata__":{"k":{}}}'), 9, "must be a string"),
    "metadata not an object": (_file('{"__metadata__":"x"}'), 9, "must be an object"),
    "tensor named __metadata__": (
        _file('{"__metadata__":{"dtype":"U8","shape":[2],"data_offsets":[0,2]}}', b"xy"),
        9,
        "cannot be a tensor name",
    ),
    "tensor not an object": (_file('{"a":[1]}'), 9, "expected an object"),
    "missing dtype": (_file('{"a":{"shape":[2],"data_offsets":[0,2]}}', b"xy"), 9, "'dtype'"),
    "unknown dtype": (_file('{"a":{"dtype":"Q4","shape":[2],"data_offsets":[0,2]}}'), 9, "Q4"),
    "lower-case dtype": (_file('{"a":{"dtype":"u8","shape":[2],"data_offsets":[0,2]}}'), 9, "u8"),
    "negative axis": (_file('{"a":{"dtype":"U8","shape":[-2],"data_offsets":[0,2]}}'), 9, "shape"),
    "float axis": (_file('{"a":{"dtype":"U8","shape":[2.0],"data_offsets":[0,2]}}'), 9, "shape"),
    "bool axis": (_file('{"a":{"dtype":"U8","shape":[true],"data_offsets":[0,1]}}'), 9, "shape"),
    "axis past u64": (
        _file('{"a":{"dtype":"U8","shape":[18446744073709551616],"data_offsets":[0,1]}}'),
        9,
        "shape",
    ),
    "three offsets": (
        _file('{"a":{"dtype":"U8","shape":[2],"data_offsets":[0,2,2]}}', b"xy"),
        9,
        "two unsigned",
    ),
    "string offset": (
        _file('{"a":{"dtype":"U8","shape":[2],"data_offsets":["0",2]}}', b"xy"),
        9,
        "two unsigned",
    ),
    "hole at the start": (
        _file('{"a":{"dtype":"U8","shape":[1],"data_offsets":[1,2]}}', b"xy"),
        9,
        "leaves a hole of 1 bytes",
    ),
    "hole between tensors": (
        _file(
            '{"a":{"dtype":"U8","shape":[1],"data_offsets":[0,1]},'
            '"b":{"dtype":"U8","shape":[1],"data_offsets":[2,3]}}',
            b"xyz",
        ),
        61,
        "hole",
    ),
    "overlapping tensors": (
        _file(
            '{"a":{"dtype":"U8","shape":[2],"data_offsets":[0,2]},'
            '"b":{"dtype":"U8","shape":[2],"data_offsets":[1,3]}}',
            b"xyz",
        ),
        61,
        "overlaps the data before it by 1 bytes",
    ),
    "end before begin": (
        _file(
            '{"a":{"dtype":"U8","shape":[2],"data_offsets":[0,2]},'
            '"b":{"dtype":"U8","shape":[0],"data_offsets":[2,1]}}',
            b"xy",
        ),
        61,
        "ends before it begins",
    ),
    "offsets past the end": (
        _file('{"a":{"dtype":"U8","shape":[1000000],"data_offsets":[0,1000000]}}', b"xy"),
        73,
        "truncated: tensor 'a' needs bytes 73..1,000,073 but the file ends at 75",
    ),
    "lying offsets 2^63": (
        _file(
            '{"a":{"dtype":"U8","shape":[9223372036854775808],'
            '"data_offsets":[0,9223372036854775808]}}',
            b"xy",
        ),
        9,
        "cannot be materialized",
    ),
    "lying offsets 2^58": (
        _file(
            '{"a":{"dtype":"U8","shape":[288230376151711743],'
            '"data_offsets":[0,288230376151711743]}}',
            b"xy",
        ),
        95,
        "truncated: tensor 'a' needs bytes 95..288,230,376,151,711,838 but the file ends at 97",
    ),
    "wrong nbytes for dtype and shape": (
        _file('{"a":{"dtype":"F32","shape":[2],"data_offsets":[0,4]}}', b"xyzw"),
        9,
        "F32 [2] needs 8 bytes but data_offsets [0, 4] span 4",
    ),
    "shape overflows 64 bits": (
        _file('{"a":{"dtype":"U8","shape":[4294967296,4294967296,0],"data_offsets":[0,0]}}'),
        9,
        "cannot be materialized",
    ),
    "packed F4 not whole bytes": (
        _file('{"a":{"dtype":"F4","shape":[3],"data_offsets":[0,2]}}', b"xy"),
        9,
        "not a whole number of bytes",
    ),
    "trailing bytes": (_file("{" + T + "}", b"xyz"), 8 + len(T) + 2 + 2, "1 unexpected bytes"),
    "missing data": (_file("{" + T + "}", b"x"), 8 + len(T) + 2, "truncated"),
}


@pytest.mark.parametrize(("data", "offset", "problem"), HOSTILE.values(), ids=list(HOSTILE))
def test_hostile_header_is_a_typed_error_with_offset(data, offset, problem, tmp_path):
    tracemalloc.start()
    try:
        err = _read_error(tmp_path, data)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert problem in err.problem
    assert err.offset == offset
    assert peak < 8 * len(data) + (4 << 20)


def test_f4_rows_that_are_not_whole_bytes_are_unsupported_not_misread(tmp_path):
    from bundler.errors import UnsupportedFormatError

    path = tmp_path / "f4.safetensors"
    path.write_bytes(_file('{"a":{"dtype":"F4","shape":[2,1],"data_offsets":[0,1]}}', b"x"))
    with pytest.raises(UnsupportedFormatError) as err:
        stf.read(path)
    assert err.value.offset == 9 and "whole bytes" in err.value.problem


@pytest.mark.parametrize(
    ("header", "data"),
    [
        ("  {" + T + "}\n\t\r ", b"xy"),
        ('{"__metadata__":null,' + T + "}", b"xy"),
        ('{"a":{"data_offsets":[0,2],"shape":[2],"dtype":"U8","extra":[1,{}]}}', b"xy"),
        (
            '{"b":{"dtype":"F32","shape":[0],"data_offsets":[0,0]},'
            '"a":{"dtype":"U8","shape":[2],"data_offsets":[0,2]},'
            '"c":{"dtype":"F32","shape":[0],"data_offsets":[2,2]}}',
            b"xy",
        ),
        ('{"\\u0061":{"dtype":"U8","shape":[2],"data_offsets":[0,2]}}', b"xy"),
    ],
    ids=["whitespace", "null metadata", "key order and unknown fields", "empty tensors", "escape"],
)
def test_what_the_reference_reader_accepts_is_read(header, data, tmp_path):
    import safetensors

    raw = _file(header, data)
    assert safetensors.deserialize(raw)
    path = tmp_path / "ok.safetensors"
    path.write_bytes(raw)
    bundle = stf.read(path)
    assert bundle.tensors["a"].raw().tobytes() == b"xy"


def test_error_offsets_count_bytes_not_characters(tmp_path):
    header = '{"__metadata__":{"é":"€"},"a":{"dtype":"U8","shape":[3],"data_offsets":[0,2]}}'
    err = _read_error(tmp_path, _file(header, b"xy"))
    assert err.offset == 8 + header.encode().index(b'"a"')


def test_the_reference_rejects_what_we_reject(tmp_path):
    """Our errors are a superset of the reference's on the cases it has an opinion on."""
    import safetensors

    rejected_by_both = [
        k for k in HOSTILE if k not in ("duplicate tensor", "duplicate metadata key")
    ]
    for name in rejected_by_both:
        with pytest.raises(safetensors.SafetensorError):
            safetensors.deserialize(HOSTILE[name][0])


def test_directory_and_missing_paths_are_typed_errors(tmp_path):
    from bundler.errors import FileNotFound

    with pytest.raises(FileNotFound):
        stf.read(tmp_path / "nope.safetensors")
    (tmp_path / "empty").mkdir()
    with pytest.raises(FormatError, match="no SafeTensors files"):
        stf.read(tmp_path / "empty")


def test_sniff_takes_safetensors_heads_only():
    assert stf.sniff(_file("{}"))
    assert stf.sniff(_file("   {" + T + "}"))
    assert not stf.sniff(b"GGUF\x03\x00\x00\x00" + b"\0" * 16)
    assert not stf.sniff(b"APR\x00" + b"\0" * 60)
    assert not stf.sniff(_file("{}", n=2**60))
    assert not stf.sniff(_file("[]"))
    assert not stf.sniff(b"\x08\0\0\0\0\0\0\0")
    assert json.loads(_file("{}")[8:]) == {}


@pytest.mark.parametrize("mask", [0x01, 0x80])
def test_entry_by_entry_parser_agrees_with_the_json_module_on_every_flipped_header(mask, tmp_path):
    """The header is walked entry by entry (its entries go straight into columns): it must
    accept and refuse the same headers as the json module's one-call parse (duplicate keys
    refused), with the same entries and metadata."""
    from bundler.containers.safetensors.reader import _Parser

    def pairs(items):
        keys = [k for k, _ in items]
        if len(set(keys)) != len(keys):
            raise ValueError("duplicate key")
        return dict(items)

    data = _small_file(tmp_path)
    end = 8 + int.from_bytes(data[:8], "little")
    for i in range(8, end):
        flipped = bytearray(data[8:end])
        flipped[i - 8] ^= mask
        try:
            text = bytes(flipped).decode("utf-8")
        except UnicodeDecodeError:
            continue
        try:
            ours = _Parser(text, "x").parse()
            ours = (ours[0], [(e.name, e.dtype, e.shape, e.begin, e.end) for e in ours[1]])
        except FormatError:
            ours = None
        try:
            obj = json.loads(text, object_pairs_hook=pairs)
        except ValueError:
            assert ours is None, i
            continue
        meta = obj.pop("__metadata__", None) if isinstance(obj, dict) else None
        fields = {k: _entry(v) for k, v in obj.items()} if isinstance(obj, dict) else {}
        valid = (
            isinstance(obj, dict)
            and (meta is None or (isinstance(meta, dict) and all(map(_is_str, meta.values()))))
            and None not in fields.values()
            and all(map(_is_text, [*obj, *(meta or {}), *(meta or {}).values()]))
        )
        if valid:
            entries = [(k, f[0], f[1], f[2], f[3]) for k, f in fields.items()]
            assert ours == (meta, entries), i
        else:
            assert ours is None, i


def _entry(v):
    from bundler.containers.safetensors.reader import _compact

    keys = {"dtype", "shape", "data_offsets"}
    return _compact(v) if isinstance(v, dict) and set(v) == keys else None


def _is_str(v) -> bool:
    return isinstance(v, str)


def _is_text(s: str) -> bool:
    try:
        s.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True
