"""The scale scan of `validate` reads scales in the file's byte order and places each
finding at the byte offset of the field in the file."""

from __future__ import annotations

import numpy as np
import pytest

from bundler.bundle import Bundle, FileSource, Tensor
from bundler.containers import open_bundle, save
from bundler.validate import validate

NAN = {False: b"\x00\x7e", True: b"\x7e\x00"}  # half 0x7E00, little- and big-endian


@pytest.mark.parametrize("big_endian", [False, True])
@pytest.mark.parametrize("codec", ["q4_1", "q6_k"])
def test_a_nan_scale_is_found_in_either_byte_order(tmp_path, big_endian, codec):
    x = np.random.default_rng(3).standard_normal((3, 512)).astype(np.float32)
    path = tmp_path / "m.gguf"
    save(Bundle({"general.name": "t"}, [Tensor.from_array("w", x, codec)]), path,
         big_endian=big_endian)  # fmt: skip
    assert validate(path).valid
    src = open_bundle(path).tensors["w"].source
    assert isinstance(src, FileSource)
    d_at = {"q4_1": 0, "q6_k": 208}[codec]
    block_bytes = {"q4_1": 20, "q6_k": 210}[codec]
    at = src.offset + 3 * block_bytes + d_at
    with open(path, "r+b") as f:
        f.seek(at)
        f.write(NAN[big_endian])
    report = validate(path)
    assert not report.valid and report.parsed
    (error,) = report.errors
    assert (error.tensor, error.blocks, error.offset, error.rule) == ("w", [3], at, "nan-scale")


@pytest.mark.filterwarnings("ignore::bundler.errors.AprCompatibilityWarning")
@pytest.mark.parametrize("ext", ["gguf", "safetensors", "apr"])
def test_a_file_cut_anywhere_is_unreadable_not_invalid(tmp_path, ext):
    # unreadable (exit 4) rests on the readers' TruncatedError, whichever check trips first
    path = tmp_path / f"m.{ext}"
    meta = {"general.architecture": "t", "general.name": "a name to cut through"}
    x = np.random.default_rng(4).standard_normal((2, 64)).astype(np.float32)
    save(Bundle(meta, [Tensor.from_array("w", x, "q8_0")]), path)
    data = path.read_bytes()
    src = open_bundle(path).tensors["w"].source
    cut = tmp_path / f"cut.{ext}"
    # from past the format's magic to the last tensor byte (GGUF's end padding is optional)
    for n in range(16, src.offset + src.nbytes, 5):
        cut.write_bytes(data[:n])
        report = validate(cut)
        assert not report.valid and not report.parsed, (n, report.errors)
