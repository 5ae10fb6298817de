"""`quantize --keep-split`: a split GGUF input quantized into the same shards, as
llama-quantize writes them (its output is the oracle: same shard names, tensors, split keys
and metadata; the first shard differs only in where `general.file_type` sits)."""

from __future__ import annotations

from pathlib import Path

import gguf
import numpy as np
import pytest
from conftest import run_cli
from test_llama_quantize_oracle import RESET_BY_LLAMA_QUANTIZE, _field_bytes

from bundler.errors import EXIT_USAGE

pytestmark = [pytest.mark.oracle_c, pytest.mark.realfile]


@pytest.fixture(scope="module")
def split_input(smollm2_gguf, tmp_path_factory) -> Path:
    """SmolLM2 as a set of three shards (bundler's own splitting, read by llama.cpp)."""
    out = tmp_path_factory.mktemp("split-in")
    run_cli("convert", str(smollm2_gguf), "-o", str(out / "in.gguf"), "--split-max-size", "40M",
            check=True)  # fmt: skip
    return out / "in-00001-of-00003.gguf"


@pytest.fixture(scope="module")
def both(split_input, llama_quantize, tmp_path_factory):
    from tools.reference.llama_quantize import run

    out = tmp_path_factory.mktemp("split-out")
    run(split_input, out / "lq.gguf", "Q8_0", "--allow-requantize", "--keep-split")
    run_cli("quantize", str(split_input), "--type", "Q8_0", "--allow-requantize", "--keep-split",
            "-o", str(out / "ours.gguf"), check=True)  # fmt: skip
    return out


def test_each_shard_is_written_as_llama_quantize_writes_it(both):
    theirs = sorted(p.name.removeprefix("lq") for p in both.glob("lq-*.gguf"))
    ours = sorted(p.name.removeprefix("ours") for p in both.glob("ours-*.gguf"))
    assert ours == theirs == [f"-0000{i}-of-00003.gguf" for i in (1, 2, 3)]
    for suffix in theirs:
        want, got = gguf.GGUFReader(both / f"lq{suffix}"), gguf.GGUFReader(both / f"ours{suffix}")
        assert [t.name for t in got.tensors] == [t.name for t in want.tensors]
        for a, b in zip(got.tensors, want.tensors, strict=True):
            assert a.tensor_type == b.tensor_type, a.name
            assert np.array_equal(np.asarray(a.data).view(np.uint8),
                                  np.asarray(b.data).view(np.uint8)), a.name  # fmt: skip
        keys = [k for k in want.fields if not k.startswith("GGUF.")]
        assert sorted(k for k in got.fields if not k.startswith("GGUF.")) == sorted(keys)
        differ = [k for k in keys if _field_bytes(got.fields[k]) != _field_bytes(want.fields[k])]
        assert differ == []
        if suffix != theirs[0]:  # later shards: the split keys only, byte for byte
            assert keys == ["split.no", "split.count", "split.tensors.count"]
            assert (both / f"ours{suffix}").read_bytes() == (both / f"lq{suffix}").read_bytes()
        else:
            moved = [k for k in keys if k not in RESET_BY_LLAMA_QUANTIZE]
            assert [k for k in got.fields if k in moved] == moved


def test_a_single_file_input_is_written_as_one_numbered_shard(smollm2_gguf, tmp_path):
    # llama-quantize --keep-split on one file writes <stem>-00001-of-00001.gguf, no split keys
    done = run_cli("quantize", str(smollm2_gguf), "--type", "Q8_0", "--allow-requantize",
                   "--keep-split", "-o", str(tmp_path / "one.gguf"))  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert [p.name for p in tmp_path.iterdir()] == ["one-00001-of-00001.gguf"]
    fields = gguf.GGUFReader(tmp_path / "one-00001-of-00001.gguf").fields
    assert not [k for k in fields if k.startswith("split.")]


@pytest.mark.parametrize(
    ("output", "extra"),
    [("out.gguf", ("--split-max-size", "10M")), ("out.safetensors", ())],
)
def test_keep_split_refuses_what_it_cannot_do(smollm2_gguf, tmp_path, output, extra):
    done = run_cli("quantize", str(smollm2_gguf), "--type", "Q8_0", "--allow-requantize",
                   "--keep-split", *extra, "-o", str(tmp_path / output))  # fmt: skip
    assert done.returncode == EXIT_USAGE and "--keep-split" in done.stderr
    assert "Traceback" not in done.stderr and list(tmp_path.iterdir()) == []
