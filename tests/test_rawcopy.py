"""Unchanged file ranges are copied in the kernel, with the bytes, file position and errors
of the chunked path; other sources, big-endian ranges and non-files still stream."""

from __future__ import annotations

import errno
import io
import os

import numpy as np
import pytest

import bundler
from bundler import rawcopy
from bundler.bundle import Bundle, FileSource, Tensor
from bundler.containers import save
from bundler.errors import FormatError

#: How the kernel copy is made to behave: each name forces the path after it.
MODES = ["copy_file_range", "sendfile", "chunked"]


def _refuse(*args, **kwargs):
    raise OSError(errno.EXDEV, "Invalid cross-device link")


def _force(monkeypatch, mode: str) -> None:
    if mode in ("sendfile", "chunked"):
        monkeypatch.setattr(os, "copy_file_range", _refuse, raising=False)
    if mode == "chunked":
        monkeypatch.setattr(os, "sendfile", _refuse, raising=False)


def _no_streaming(monkeypatch) -> None:
    def refuse(self, chunk_bytes):
        raise AssertionError("bytes streamed through Python")

    monkeypatch.setattr(FileSource, "iter_raw", refuse)


def _file_bundle(tmp_path, offset: int = 37) -> Bundle:
    """Three tensors as little-endian ranges of one file, at unaligned offsets."""
    rng = np.random.default_rng(7)
    arrays = {
        "a": rng.standard_normal((33, 64)).astype(np.float32),
        "b": rng.integers(-128, 127, (5, 7), dtype=np.int8),
        "c": rng.standard_normal(1000).astype(np.float16),
    }
    path = tmp_path / "blob.bin"
    tensors, at = [], offset
    with open(path, "wb") as f:
        f.write(bytes(offset))
        for name, a in arrays.items():
            f.write(a.tobytes())
            t = Tensor.from_array(name, a)
            tensors.append(Tensor(name, a.shape, t.codec, FileSource(path, at, a.nbytes, t.codec)))
            at += a.nbytes
    return Bundle({}, tensors)


@pytest.mark.parametrize("ext", ["gguf", "safetensors"])
@pytest.mark.parametrize("mode", MODES)
def test_every_copy_path_writes_the_bytes_of_the_chunked_path(ext, mode, tmp_path, monkeypatch):
    b = _file_bundle(tmp_path)
    save(b, tmp_path / f"ref.{ext}")  # before forcing anything: the fast path
    with monkeypatch.context() as m:
        _force(m, "chunked")
        save(b, tmp_path / f"chunked.{ext}")
    _force(monkeypatch, mode)
    if mode != "chunked":
        _no_streaming(monkeypatch)
    save(b, tmp_path / f"out.{ext}")
    expected = (tmp_path / f"chunked.{ext}").read_bytes()
    assert (tmp_path / f"out.{ext}").read_bytes() == expected
    assert (tmp_path / f"ref.{ext}").read_bytes() == expected


def test_a_kernel_copy_failing_halfway_is_redone_from_the_tensor_start(tmp_path, monkeypatch):
    b = _file_bundle(tmp_path)
    save(b, tmp_path / "ref.gguf")
    real = os.copy_file_range

    def half_then_fail(src, dst, count, offset_src=None, offset_dst=None):
        real(src, dst, max(1, count // 2), offset_src, offset_dst)
        raise OSError(errno.EIO, "I/O error")

    monkeypatch.setattr(os, "copy_file_range", half_then_fail)
    monkeypatch.setattr(os, "sendfile", _refuse)
    save(b, tmp_path / "out.gguf")
    assert (tmp_path / "out.gguf").read_bytes() == (tmp_path / "ref.gguf").read_bytes()


@pytest.mark.parametrize("mode", MODES)
def test_copy_raw_keeps_the_file_position_between_buffered_writes(mode, tmp_path, monkeypatch):
    t = _file_bundle(tmp_path).tensors["a"]
    _force(monkeypatch, mode)
    with open(tmp_path / "out.bin", "wb") as f:
        f.write(b"head")  # still in the buffer when the copy starts
        assert rawcopy.copy_raw(t, f) == t.nbytes
        assert f.tell() == 4 + t.nbytes
        f.write(b"tail")
    assert (tmp_path / "out.bin").read_bytes() == b"head" + t.raw().tobytes() + b"tail"


def test_an_output_without_a_file_descriptor_is_streamed(tmp_path):
    t = _file_bundle(tmp_path).tensors["c"]
    out = io.BytesIO()
    assert rawcopy.copy_raw(t, out) == t.nbytes
    assert out.getvalue() == t.raw().tobytes()


def test_a_big_endian_range_is_streamed_swapped(tmp_path, monkeypatch):
    a = np.arange(100, dtype=np.float32)
    path = tmp_path / "be.bin"
    path.write_bytes(a.astype(">f4").tobytes())
    t = Tensor.from_array("a", a)
    be = Tensor("a", a.shape, t.codec, FileSource(path, 0, a.nbytes, t.codec, big_endian=True))
    with open(tmp_path / "out.bin", "wb") as f:
        assert rawcopy.copy_raw(be, f) == a.nbytes
    assert (tmp_path / "out.bin").read_bytes() == a.tobytes()


def _truncated_error(b: Bundle, target) -> FormatError:
    with pytest.raises(FormatError) as err:
        save(b, target)
    assert not os.path.exists(target)
    return err.value


@pytest.mark.parametrize("ext", ["gguf", "safetensors"])
@pytest.mark.parametrize("mode", MODES)
def test_a_truncated_source_gives_the_chunked_paths_format_error(ext, mode, tmp_path, monkeypatch):
    b = _file_bundle(tmp_path)
    src = b.tensors["a"].source
    os.truncate(src.path, src.offset + 1000)
    with monkeypatch.context() as m:
        _force(m, "chunked")
        expected = _truncated_error(b, tmp_path / f"chunked.{ext}")
    _force(monkeypatch, mode)
    got = _truncated_error(b, tmp_path / f"out.{ext}")
    assert "file ends inside tensor data" in str(got)
    assert (got.path, got.offset, got.problem) == (expected.path, expected.offset, expected.problem)


@pytest.mark.realfile
@pytest.mark.parametrize("mode", ["copy_file_range", "chunked"])
@pytest.mark.parametrize("fixture", ["smollm2_gguf", "minilm_safetensors"])
def test_real_files_rewrite_byte_identical_on_each_path(
    fixture, mode, request, tmp_path, monkeypatch
):
    path = request.getfixturevalue(fixture)
    _force(monkeypatch, mode)
    if mode != "chunked":
        _no_streaming(monkeypatch)
    out = tmp_path / path.name
    bundler.open(path).save(out)
    assert out.read_bytes() == path.read_bytes()
