"""Hostile GGUF input: truncated at every byte, a flipped byte in every header field, lying
counts, lengths and offsets. Each gives a typed FormatError naming the file, the offset and
the problem, within a fixed memory bound; never another exception."""

from __future__ import annotations

import tracemalloc
import warnings

import gguf_hostile
import pytest
from gguf_samples import small_bundle

import bundler
from bundler.containers import gguf as gguf_container
from bundler.containers.gguf.reader import parse
from bundler.containers.gguf.rules import check_llama_rules
from bundler.errors import FormatError, TruncatedError, UnsupportedFormatError, UsageError

#: Extra memory a read of a file of a few KiB may take, whatever its fields claim.
MEMORY_BOUND = 8 << 20


@pytest.fixture(autouse=True)
def _traced():
    tracemalloc.start()
    yield
    tracemalloc.stop()


def _read_bounded(path):
    """Read `path`; returns the bundle or the FormatError, after checking the memory peak."""
    tracemalloc.reset_peak()
    base, _ = tracemalloc.get_traced_memory()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", gguf_container.UnknownTensorTypeWarning)
        try:
            result = gguf_container.read(path)
        except FormatError as exc:
            result = exc
    _, peak = tracemalloc.get_traced_memory()
    assert peak - base < MEMORY_BOUND, f"reading took {peak - base:,} bytes"
    return result


@pytest.fixture(scope="module")
def small_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("small") / "small.gguf"
    gguf_container.write(small_bundle(), path)
    assert check_llama_rules(path) == []
    layout = parse(path)
    last = layout.tensors[-1]
    return path, path.read_bytes(), layout.data_start, layout.data_start + last.offset + last.nbytes


def test_truncated_at_every_byte_is_a_truncation_error(small_file, tmp_path):
    _, data, _, data_end = small_file
    path = tmp_path / "cut.gguf"
    for n in range(len(data)):
        path.write_bytes(data[:n])
        result = _read_bounded(path)
        if n < data_end:
            assert isinstance(result, FormatError), f"a file cut at {n} was read"
            assert isinstance(result, TruncatedError), (n, result)
            assert result.path == str(path) and result.problem
            assert result.offset is not None and 0 <= result.offset <= n
        else:  # only the last tensor's padding is missing: every byte is there
            assert not isinstance(result, FormatError), result


def test_flipped_byte_in_every_header_field_is_read_or_refused(small_file, tmp_path):
    _, data, data_start, _ = small_file
    path = tmp_path / "flipped.gguf"
    refused = 0
    for at in range(data_start):
        mutated = bytearray(data)
        mutated[at] ^= 0xFF
        path.write_bytes(mutated)
        result = _read_bounded(path)
        if isinstance(result, FormatError):
            refused += 1
            assert result.path == str(path) and result.problem
        else:
            assert isinstance(result, bundler.Bundle)
    # magic, version, both counts and every length prefix are caught at least
    assert refused > 100


@pytest.mark.parametrize("name", sorted(gguf_hostile.cases()))
def test_lying_field_gives_a_format_error(name, tmp_path):
    data, phrase = gguf_hostile.cases()[name]
    path = tmp_path / f"{name}.gguf"
    path.write_bytes(data)
    result = _read_bounded(path)
    assert isinstance(result, FormatError), f"{name} was read: {result}"
    assert result.path == str(path)
    assert phrase in result.problem
    assert str(path) in str(result)
    if name.startswith("version_") and name != "version_0":
        assert isinstance(result, UnsupportedFormatError)
    elif name != "not_gguf":
        assert result.offset is not None


def test_the_valid_base_of_the_hostile_cases_reads(tmp_path):
    path = tmp_path / "valid.gguf"
    path.write_bytes(gguf_hostile.valid().build())
    bundle = bundler.open(path)
    assert list(bundle.tensors) == ["a", "b"]
    assert bundle.tensors["b"].raw().tobytes() == bytes(range(32, 64))


@pytest.mark.parametrize(
    "data", [b"", b"GG", b"GGUF\x03\x00\x00\x00", b"\x00" * 40], ids=["empty", "2", "8", "zeros"]
)
def test_tiny_or_foreign_file_is_a_format_error(tmp_path, data):
    path = tmp_path / "tiny.gguf"
    path.write_bytes(data)
    with pytest.raises(FormatError) as err:
        bundler.open(path, format="gguf")
    assert err.value.path == str(path)


def test_unknown_tensor_types_past_the_limit_are_a_format_error(tmp_path):
    from bundler.containers.gguf.schema import MAX_UNKNOWN_TENSORS

    path = tmp_path / "unknown.gguf"
    path.write_bytes(gguf_hostile.unknown_types(MAX_UNKNOWN_TENSORS + 1))
    err = _read_bounded(path)
    assert isinstance(err, FormatError) and err.path == str(path) and err.offset > 0
    assert f"more than {MAX_UNKNOWN_TENSORS:,} tensors of GGML types" in err.problem
    assert f"'u4096' has type {gguf_hostile.UNKNOWN_TYPE}" in err.problem
    path.write_bytes(gguf_hostile.unknown_types(MAX_UNKNOWN_TENSORS))
    read = _read_bounded(path)
    assert not isinstance(read, FormatError)
    assert len(read.format_info["skipped_tensors"]) == MAX_UNKNOWN_TENSORS


def test_unknown_tensor_type_is_skipped_with_a_warning_and_the_rest_reads(tmp_path):
    path = tmp_path / "unknown.gguf"
    path.write_bytes(gguf_hostile.unknown_type())
    said = f"'a' has GGML type {gguf_hostile.UNKNOWN_TYPE}"
    with pytest.warns(gguf_container.UnknownTensorTypeWarning, match=said):
        bundle = bundler.open(path)
    assert list(bundle.tensors) == ["b"]
    assert bundle.metadata["general.architecture"] == "llama"
    assert bundle.format_info["skipped_tensors"][0]["ggml_type"] == gguf_hostile.UNKNOWN_TYPE
    assert bundle.tensors["b"].raw().tobytes() == bytes(range(32))
    with pytest.raises(UsageError, match="drop_unknown"):
        bundle.save(tmp_path / "out.gguf")
    bundle.save(tmp_path / "out.gguf", drop_unknown=True)
    assert check_llama_rules(tmp_path / "out.gguf") == []
    assert list(bundler.open(tmp_path / "out.gguf").tensors) == ["b"]
