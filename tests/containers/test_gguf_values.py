"""GGUF string arrays: long runs are decoded and encoded as one text (split at NULs put in
place of the lengths); every string array reads and writes exactly as string by string,
whatever the strings hold (NUL, invalid UTF-8, nothing), the byte order and the window."""

from __future__ import annotations

import struct
from unittest.mock import patch

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bundler.bundle import Value, ValueType
from bundler.containers.gguf import values
from bundler.errors import TruncatedError, UsageError

#: Pieces of every kind of string but one holding a NUL: ASCII, whole and cut multi-byte
#: sequences, bytes that are never UTF-8.
_PIECES = st.sampled_from(
    [
        b"a",
        b"Hello",
        b" ",
        b"\xe2\x82\xac",
        b"\xe2\x82",
        b"\xff",
        b"\xc3\xa9",
        b"\x80",
        b"\xf0\x9f\x98\x80",
    ]
)
#: Arrays without a NUL (decoded as one text) and arrays of any bytes (mostly string by
#: string: a NUL inside a string sends a run that way).
_LISTS = st.lists(st.lists(_PIECES, max_size=4).map(b"".join), max_size=300) | st.lists(
    st.binary(max_size=8), max_size=300
)


def _body(items: list[bytes], big_endian: bool) -> bytes:
    fmt = ">Q" if big_endian else "<Q"
    return b"".join(struct.pack(fmt, len(b)) + b for b in items)


def _read(body: bytes, count: int, big_endian: bool, decode=True) -> tuple[list[str], int]:
    value, end = values.read_array(
        body, 0, len(body), ValueType.STRING, count, big_endian, "f", "k", decode=decode
    )
    return value.value, end


@settings(max_examples=150, deadline=None)
@given(items=_LISTS, big_endian=st.booleans(), window=st.sampled_from([8, 100, 4099, 16 << 20]))
def test_a_string_array_reads_as_each_string_decoded_alone(items, big_endian, window):
    body = _body(items, big_endian) + b"tail"
    with patch.object(values, "STRING_WINDOW", window):
        strings, end = _read(body, len(items), big_endian)
    assert strings == [b.decode("utf-8", "surrogateescape") for b in items]
    assert end == len(body) - 4
    assert _read(body, len(items), big_endian, decode=False) == ([""] * len(items), end)


@settings(max_examples=150, deadline=None)
@given(items=_LISTS, big_endian=st.booleans())
def test_a_string_array_writes_as_each_string_encoded_alone_and_reads_back(items, big_endian):
    strings = [b.decode("utf-8", "surrogateescape") for b in items]
    body = values.array_body(Value(ValueType.ARRAY, strings, ValueType.STRING), big_endian, "k")
    assert body == _body(items, big_endian)
    assert _read(body, len(items), big_endian)[0] == strings


@pytest.mark.parametrize("decode", [True, False])
@pytest.mark.parametrize("window", [8, 100, 16 << 20])
@pytest.mark.parametrize("cut", [3, 8 + 2])  # inside a length; inside the string it gives
def test_a_cut_string_array_names_the_first_string_it_cannot_read(window, cut, decode, monkeypatch):
    monkeypatch.setattr(values, "STRING_WINDOW", window)
    items = [b"tok%d" % i for i in range(200)]
    body = _body(items, False)
    at = len(_body(items[:150], False))
    with pytest.raises(TruncatedError, match="string 150 ") as err:
        _read(body[: at + cut], len(items), False, decode)
    assert err.value.offset == at


def test_a_string_that_cannot_be_utf8_is_named_when_written():
    strings = [f"t{i}" for i in range(100)] + ["\ud800"]  # a lone surrogate, not an escape
    with pytest.raises(Exception, match="cannot be stored as UTF-8"):
        values.array_body(Value(ValueType.ARRAY, strings, ValueType.STRING), False, "k")


@pytest.mark.parametrize("decode", [True, False])
@pytest.mark.parametrize("claim", [1 << 40, (1 << 63) + 5, (1 << 64) - 1])
def test_a_lying_length_in_a_long_run_is_named_not_followed(claim, decode):
    items = [b"tok%d" % i for i in range(200)]
    body = bytearray(_body(items, False))
    at = len(_body(items[:120], False))
    body[at : at + 8] = struct.pack("<Q", claim)
    with pytest.raises(TruncatedError, match=f"string 120 claims {claim:,} bytes") as err:
        _read(bytes(body), len(items), False, decode)
    assert err.value.offset == at


def test_a_long_string_array_holding_another_kind_is_refused_by_name():
    strings = [f"t{i}" for i in range(100)] + [7]
    with pytest.raises(UsageError, match="'k': string array holds a int"):
        values.array_body(Value(ValueType.ARRAY, strings, ValueType.STRING), False, "k")
