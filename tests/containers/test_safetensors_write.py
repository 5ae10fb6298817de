"""The writer streams with bounded memory, writes atomically, and refuses bundles it cannot
write correctly before touching the target."""

from __future__ import annotations

import os
import tracemalloc

import numpy as np
import pytest

from bundler.bundle import Bundle, BytesSource, Tensor
from bundler.containers import safetensors as stf
from bundler.errors import OutputExistsError, ShapeError, UsageError


@pytest.mark.realfile
def test_rewriting_minilm_streams_in_bounded_memory(minilm_safetensors, tmp_path):
    """90 MB of tensors (the largest 47 MB) are copied with a few MB of extra memory."""
    tracemalloc.start()
    try:
        stf.write(stf.read(minilm_safetensors), tmp_path / "out.safetensors")
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert os.path.getsize(tmp_path / "out.safetensors") == 90_868_376
    assert peak < 12 << 20


class _ShortSource(BytesSource):
    def iter_raw(self, chunk_bytes):
        yield self.raw()[:-1]


def _listing(path):
    return sorted(os.listdir(path))


@pytest.mark.parametrize("existing", [False, True])
def test_a_source_giving_the_wrong_byte_count_leaves_the_target_as_it_was(existing, tmp_path):
    target = tmp_path / "out.safetensors"
    if existing:
        target.write_bytes(b"old")
    good = Tensor.from_array("a", np.ones(4, np.float32))
    short = Tensor("b", (4,), "f32", _ShortSource(np.ones(4, np.float32).view(np.uint8)))
    with pytest.raises(UsageError, match="source gives 15 bytes where f32 \\[4\\] needs 16"):
        stf.write(Bundle({}, [good, short]), target)
    assert _listing(tmp_path) == (["out.safetensors"] if existing else [])
    if existing:
        assert target.read_bytes() == b"old"


def test_refuses_to_overwrite_without_force(tmp_path):
    target = tmp_path / "out.safetensors"
    target.write_bytes(b"old")
    with pytest.raises(OutputExistsError):
        stf.write(Bundle({}, []), target, force=False)
    assert target.read_bytes() == b"old"


def test_written_files_get_the_usual_permissions(tmp_path):
    stf.write(Bundle({}, []), tmp_path / "out.safetensors")
    mask = os.umask(0o022)
    os.umask(mask)
    assert os.stat(tmp_path / "out.safetensors").st_mode & 0o777 == 0o666 & ~mask


@pytest.mark.parametrize(
    ("tensor", "error", "message"),
    [
        (Tensor.from_array("__metadata__", np.ones(2)), UsageError, "reserved"),
        (Tensor.from_raw("f4", (3,), "f4", b"x"), UsageError, "whole rows"),
        (Tensor("q", (2, 40), "q4_0", BytesSource(b"")), ShapeError, "multiple of 32"),
        (Tensor.from_array("\ud800", np.ones(2)), UsageError, "not valid Unicode"),
    ],
    ids=["reserved name", "packed F4 half byte", "q4_0 partial block", "lone surrogate"],
)
def test_unwritable_bundles_are_refused_before_the_target_is_created(
    tensor, error, message, tmp_path
):
    with pytest.raises(error, match=message):
        stf.write(Bundle({}, [tensor]), tmp_path / "out.safetensors")
    assert _listing(tmp_path) == []


def test_a_directory_target_means_model_safetensors_inside_it(tmp_path):
    stf.write(Bundle({"k": "v"}, [Tensor.from_array("a", np.ones(2, np.float32))]), tmp_path)
    assert _listing(tmp_path) == ["model.safetensors"]
    assert stf.read(tmp_path).metadata["k"] == "v"
