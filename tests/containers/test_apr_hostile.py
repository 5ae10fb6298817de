"""Hostile APR input: every problem is a typed FormatError naming file, offset and problem,
within a small memory bound; never a traceback, a hang or a huge allocation."""

from __future__ import annotations

import struct
import tracemalloc
import warnings

import numpy as np
import pytest
from apr_samples import RawApr, RawEntry, entries_for

from bundler.bundle import Bundle, Metadata, Tensor
from bundler.containers import apr
from bundler.errors import (
    AprCompatibilityWarning,
    FileNotFound,
    FormatError,
    TruncatedError,
    UnsupportedFormatError,
)

#: Extra memory any failing read may take (the files are at most a few KiB).
MEMORY_BOUND = 4 << 20


def _read_error(path, cls=FormatError) -> FormatError:
    tracemalloc.start()
    try:
        with pytest.raises(cls) as err:
            apr.read(path)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < MEMORY_BOUND, f"reading took {peak:,} bytes"
    e = err.value
    assert e.path == str(path)
    assert e.offset is not None and e.problem
    assert str(e).startswith(str(path))
    return e


@pytest.fixture(scope="module")
def small_file(tmp_path_factory) -> bytes:
    path = tmp_path_factory.mktemp("apr") / "small.apr"
    x = np.arange(64, dtype=np.float32).reshape(2, 32)
    md = Metadata({"general.name": "small", "n": 3})
    bundle = Bundle(md, [Tensor.from_array("w", x), Tensor.from_array("b", x[0, :5], "apr_q8")])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", AprCompatibilityWarning)
        apr.write(bundle, path)
    return path.read_bytes()


def test_small_file_reads(small_file, tmp_path):
    (tmp_path / "ok.apr").write_bytes(small_file)
    assert list(apr.read(tmp_path / "ok.apr").tensors) == ["w", "b"]


def test_truncated_at_every_byte_offset_is_a_truncation_error(small_file, tmp_path):
    path = tmp_path / "cut.apr"
    for n in range(len(small_file)):
        path.write_bytes(small_file[:n])
        e = _read_error(path)
        assert e.offset <= len(small_file), (n, e)
        # under four bytes the magic cannot be told from another format's
        assert isinstance(e, TruncatedError) == (n >= 4), (n, e)


@pytest.mark.parametrize("at", range(64))
def test_flipped_header_byte_is_caught(small_file, tmp_path, at):
    data = bytearray(small_file)
    data[at] ^= 0x5A
    (tmp_path / "flip.apr").write_bytes(bytes(data))
    e = _read_error(tmp_path / "flip.apr")
    if at < 4:
        assert "magic" in e.problem and e.offset == 0
    else:
        assert "header CRC mismatch" in e.problem and e.offset == 40


@pytest.mark.parametrize("at", [70, 200, -20, -3])
def test_flipped_byte_after_the_header_fails_the_footer_crc(small_file, tmp_path, at):
    data = bytearray(small_file)
    at = at % len(data)
    if 64 + struct.unpack_from("<I", data, 20)[0] <= at < struct.unpack_from("<Q", data, 24)[0]:
        pytest.skip("metadata padding")
    data[at] ^= 0x01
    (tmp_path / "flip.apr").write_bytes(bytes(data))
    e = _read_error(tmp_path / "flip.apr")
    assert "CRC" in e.problem or "UTF-8" in e.problem or "JSON" in e.problem


F32 = np.arange(8, dtype=np.float32).tobytes()


def _two_tensors(**changes) -> RawApr:
    entries, payloads = entries_for([("a", 0, [8], F32), ("b", 0, [8], F32)])
    for key, value in changes.items():
        i, name = key.split("_", 1)
        setattr(entries[int(i)], name, value)
    return RawApr(entries=entries, payloads=payloads)


CASES = {
    # lying counts and lengths in the header
    "2^32-1 tensors": (RawApr(overrides={"tensor_count": 2**32 - 1}), 8, "tensor count"),
    "4 GiB metadata": (RawApr(overrides={"metadata_size": 2**32 - 1}), 20, "more than the limit"),
    "metadata at 1 TB": (RawApr(overrides={"metadata_offset": 2**40}), 20, "metadata needs"),
    "metadata inside header": (RawApr(overrides={"metadata_offset": 0}), 12, "inside the header"),
    "index at 2^63": (RawApr(overrides={"tensor_index_offset": 2**63}), 24, "out of order"),
    "data at 1 TB": (RawApr(overrides={"data_offset": 2**40}), 32, "data section starts at"),
    "data before index": (RawApr(overrides={"data_offset": 64}), 24, "out of order"),
    "misaligned index": (RawApr(overrides={"tensor_index_offset": 100}), 24, "multiples of 64"),
    # lying index entries
    "name length 65535": (_two_tensors(**{"0_name_len": 65535}), None, "name length 65,535"),
    "name length past index": (_two_tensors(**{"1_name_len": 200}), None, "index ends"),
    "ndim 255": (_two_tensors(**{"0_ndim": 255}), None, "255 dimensions"),
    "ndim past index": (_two_tensors(**{"1_ndim": 8}), None, "index ends"),
    "offset 2^60": (_two_tensors(**{"1_offset": 2**60}), 157, "bad offset"),
    "size 2^60": (_two_tensors(**{"0_size": 2**60}), None, "does not match"),
    "dims 2^63": (_two_tensors(**{"0_dims": [2**63, 2**63]}), None, "cannot be materialized"),
    "overlapping offsets": (_two_tensors(**{"1_offset": 0}), None, "overlap"),
    "misaligned offset": (_two_tensors(**{"1_offset": 8}), None, "not 64-aligned"),
    "unsorted index": (_two_tensors(**{"0_name": b"c"}), None, "not sorted"),
    "duplicate names": (_two_tensors(**{"1_name": b"a"}), None, "duplicate tensor name"),
    "unknown dtype": (_two_tensors(**{"0_dtype": 200}), None, "unknown dtype code 200"),
    "name not UTF-8": (_two_tensors(**{"0_name": b"\xff"}), None, "not valid UTF-8"),
    "block row not whole": (
        RawApr(entries=[RawEntry(b"q", 66, [31], 0, 18)], payloads=[bytes(18)]),
        None,
        "multiple of 32",
    ),
    # metadata
    "metadata not JSON": (RawApr(metadata=b'{"a":'), 64, "not valid UTF-8 JSON"),
    "metadata not UTF-8": (RawApr(metadata=b'{"a":"\xff"}'), 64, "not valid UTF-8 JSON"),
    "metadata an array": (RawApr(metadata=b"[1,2]"), 64, "must be an object"),
    "metadata nested deeply": (RawApr(metadata=b"[" * 100_000), 64, "JSON"),
    "metadata repeats a key": (RawApr(metadata=b'{"a":1,"a":2}'), 64, "repeats the key"),
    "bad typed metadata": (
        RawApr(metadata=b'{"bundler.metadata":[["k","NOPE",1]]}'),
        64,
        "bad typed metadata",
    ),
    "typed value out of range": (
        RawApr(metadata=b'{"bundler.metadata":[["k","UINT8",300]]}'),
        64,
        "does not fit",
    ),
    # the rest of the file
    "wrong footer CRC": (RawApr(footer=0x12345678), None, "footer CRC mismatch"),
    "reserved bytes set": (RawApr(overrides={"reserved": b"\1" * 20}), 44, "reserved"),
}


@pytest.mark.parametrize("case", list(CASES))
def test_lying_file_is_a_format_error_naming_offset_and_problem(tmp_path, case):
    raw, offset, problem = CASES[case]
    data = raw.build()
    (tmp_path / "bad.apr").write_bytes(data)
    e = _read_error(tmp_path / "bad.apr")
    assert problem in e.problem, e
    if offset is not None:
        assert e.offset == offset, e
    assert 0 <= e.offset <= len(data)


def test_trailing_bytes_before_the_footer_are_refused(tmp_path):
    raw = RawApr(payloads=[b"x" * 64]).build()  # data the index does not describe
    (tmp_path / "bad.apr").write_bytes(raw)
    e = _read_error(tmp_path / "bad.apr")
    assert "unexpected bytes" in e.problem


UNSUPPORTED = {
    "column-major": (RawApr(flags=0x0C00), 6, "LAYOUT_COLUMN_MAJOR"),
    "LZ4": (RawApr(flags=0x0401), 6, "LZ4"),
    "ZSTD": (RawApr(flags=0x0402), 6, "ZSTD"),
    "encrypted": (RawApr(flags=0x0404), 6, "ENCRYPTED"),
    "signed": (RawApr(flags=0x0408), 6, "SIGNED"),
    "unknown flag": (RawApr(flags=0x8400), 6, "unknown flag bits 0x8000"),
    "version 3.0": (RawApr(overrides={"major": 3}), 4, "version 3.0"),
    "version 2.1": (RawApr(overrides={"minor": 1}), 4, "version 2.1"),
}


@pytest.mark.parametrize("case", list(UNSUPPORTED))
def test_unsupported_feature_is_an_unsupported_format_error(tmp_path, case):
    raw, offset, problem = UNSUPPORTED[case]
    (tmp_path / "u.apr").write_bytes(raw.build())
    e = _read_error(tmp_path / "u.apr", UnsupportedFormatError)
    assert problem in e.problem and e.offset == offset


@pytest.mark.parametrize("magic", [b"APRN", b"APR2"])
def test_old_apr_magics_are_recognised_and_refused(tmp_path, magic):
    assert apr.sniff(magic + bytes(60))
    (tmp_path / "old.apr").write_bytes(magic + bytes(200))
    e = _read_error(tmp_path / "old.apr", UnsupportedFormatError)
    assert "not supported" in e.problem and e.offset == 0


@pytest.mark.parametrize("head", [b"", b"AP", b"GGUF" + bytes(60), b"APR\0" + bytes(10)])
def test_short_or_foreign_file_is_a_format_error(tmp_path, head):
    (tmp_path / "x.apr").write_bytes(head)
    _read_error(tmp_path / "x.apr")


def test_sniff_is_true_only_for_apr_magics():
    assert apr.sniff(b"APR\0" + bytes(60))
    assert not apr.sniff(b"GGUF\3\0\0\0")
    assert not apr.sniff(b"")


def test_missing_file_and_directory_are_typed_errors(tmp_path):
    with pytest.raises(FileNotFound):
        apr.read(tmp_path / "nope.apr")
    with pytest.raises(FormatError, match="directory"):
        apr.read(tmp_path)


def test_footer_check_can_be_skipped_but_is_on_by_default(tmp_path):
    (tmp_path / "x.apr").write_bytes(RawApr(footer=0).build())
    _read_error(tmp_path / "x.apr")
    assert apr.read(tmp_path / "x.apr", verify_footer=False).tensors == {}
