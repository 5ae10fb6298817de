"""The library API of the pipeline: bundler.save, bundler.quantize, bundler.convert."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import gguf
import numpy as np
import pytest
from conftest import run_cli
from conversion_oracles import read_apr, read_gguf, read_safetensors
from gguf import GGMLQuantizationType as Q

import bundler
from bundler.codecs.floats import COMPILED_FROM
from bundler.errors import (
    AprCompatibilityWarning,
    ImportanceRequiredError,
    NonFiniteError,
    OutputExistsError,
    PlanWarning,
    UsageError,
)


def _model(seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {
        "token_embd.weight": rng.standard_normal((64, 256), dtype=np.float32),
        "blk.0.attn_norm.weight": rng.standard_normal(256, dtype=np.float32),
        "blk.0.ffn_up.weight": rng.standard_normal((96, 256), dtype=np.float32),
        "blk.0.ffn_up.bias": rng.standard_normal(96, dtype=np.float32),
        "output.weight": rng.standard_normal((64, 256), dtype=np.float32),
    }


@pytest.mark.parametrize("codec", ["q4_0", "q5_1", "q8_0"])
def test_save_quantizes_arrays_as_llama_quantize_would(tmp_path, codec):
    arrays = _model()
    path = tmp_path / "m.gguf"
    report = bundler.save(arrays, path, metadata={"general.name": "tiny", "n": 3}, codec=codec)
    tensors, md = read_gguf(path)
    want = Q[codec.upper()]
    for name in ("token_embd.weight", "blk.0.ffn_up.weight"):
        expected = gguf.quants.quantize(arrays[name], want).reshape(-1)
        assert tensors[name].codec == codec and np.array_equal(tensors[name].data, expected)
    for name in ("blk.0.attn_norm.weight", "blk.0.ffn_up.bias"):  # 1-D: kept as they are
        assert np.array_equal(tensors[name].data, arrays[name].view(np.uint8))
    # the output tensor: Q6_K for rows that are a multiple of 256, except when Q8_0 was asked
    assert tensors["output.weight"].codec == ("q8_0" if codec == "q8_0" else "q6_k")
    assert md["n"] == (gguf.GGUFValueType.INT32, 3)
    assert md["general.file_type"][1] == int(gguf.LlamaFileType[f"MOSTLY_{codec.upper()}"])
    assert report.written and report.plan.target_bytes == os.path.getsize(path) - _head(path)


def _head(path) -> int:
    reader = gguf.GGUFReader(path)
    return int(reader.data_offset)


@pytest.mark.parametrize("ext", ["gguf", "safetensors", "apr"])
def test_save_without_codec_keeps_every_array_bit_for_bit(tmp_path, ext):
    arrays = _model(1)
    path = tmp_path / f"m.{ext}"
    bundler.save(arrays, path)
    if ext == "gguf":
        stored = {k: v.data for k, v in read_gguf(path)[0].items()}
    elif ext == "apr":
        stored = {k: v.data for k, v in read_apr(path)[0].items()}
    else:
        stored = {k: v.view(np.uint8).reshape(-1) for k, v in read_safetensors(path)[0].items()}
    assert stored.keys() == arrays.keys()
    for name, a in arrays.items():
        assert np.array_equal(stored[name], a.view(np.uint8).reshape(-1)), name


@pytest.mark.parametrize(
    "make",
    [
        pytest.param(lambda a: a, id="contiguous-float32"),
        pytest.param(lambda a: np.asfortranarray(a), id="fortran-order"),
        pytest.param(lambda a: a.astype(np.float16), id="float16"),
        pytest.param(lambda a: a.astype(np.float64), id="float64"),
    ],
)
def test_save_streams_tensors_larger_than_a_chunk_exactly(tmp_path, make):
    # 2.5 chunks of rows or more (bundler.transcode.CHUNK_VALUES is 2M values at most)
    values = np.random.default_rng(2).standard_normal((5 << 10, 1024), dtype=np.float32)
    array = make(values)
    path = tmp_path / "big.gguf"
    bundler.save({"w.weight": array}, path, codec="q4_0")
    got = read_gguf(path)[0]["w.weight"].data
    expected = gguf.quants.quantize(np.asarray(array, np.float32), Q.Q4_0).reshape(-1)
    assert np.array_equal(got, expected)


def test_save_names_the_tensor_and_index_of_a_nan_and_leaves_no_file(tmp_path):
    arrays = _model()
    arrays["blk.0.ffn_up.weight"][70, 5] = np.nan
    path = tmp_path / "m.gguf"
    with pytest.raises(NonFiniteError, match=r"'blk\.0\.ffn_up\.weight'.*\(70, 5\)") as info:
        bundler.save(arrays, path, codec="q4_0")
    assert info.value.index == (70, 5)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("codec", ["IQ2_XXS", "iq1_s", "IQ3_XXS", "iq2_s"])
def test_save_refuses_a_codec_llama_quantize_writes_only_with_importance_weights(tmp_path, codec):
    # the token embedding and the output tensor are exempt, as in llama-quantize
    with pytest.raises(ImportanceRequiredError, match="pass --imatrix FILE") as err:
        bundler.save(_model(), tmp_path / "m.gguf", codec=codec)
    assert err.value.tensors == ["blk.0.ffn_up.weight"] and err.value.exit_code == 2
    assert list(tmp_path.iterdir()) == []
    with pytest.warns(PlanWarning, match="dry run only: .* needs an importance matrix"):
        report = bundler.quantize(*_saved(tmp_path), codec, dry_run=True)
    assert not report.written


def _saved(tmp_path) -> tuple[str, str]:
    src = tmp_path / "f32.gguf"
    bundler.save(_model(), src)
    return str(src), str(tmp_path / "out.gguf")


def test_save_refuses_an_existing_file_without_force(tmp_path):
    path = tmp_path / "m.gguf"
    path.write_bytes(b"keep me")
    with pytest.raises(OutputExistsError, match="already exists"):
        bundler.save(_model(), path, force=False)
    assert path.read_bytes() == b"keep me"


def test_quantize_and_convert_work_file_to_file(minilm_safetensors, tmp_path):
    q = bundler.quantize(minilm_safetensors, tmp_path / "m.gguf", "q8_0")
    with pytest.warns(AprCompatibilityWarning):  # q8_0 is this project's APR extension
        c = bundler.convert(tmp_path / "m.gguf", tmp_path / "m.apr")
    assert q.plan.file_type.name == "Q8_0" and c.plan.file_type is None
    gguf_tensors, _ = read_gguf(tmp_path / "m.gguf")
    apr_tensors, _ = read_apr(tmp_path / "m.apr")
    assert gguf_tensors.keys() == apr_tensors.keys()
    for name, t in gguf_tensors.items():
        assert np.array_equal(apr_tensors[name].data, t.data), name
    assert q.as_dict()["target_bytes"] == c.as_dict()["source_bytes"]


@pytest.mark.parametrize("call", ["quantize", "convert"])
def test_dry_run_writes_nothing_and_reports_the_sizes(minilm_safetensors, tmp_path, call):
    dst = tmp_path / "m.gguf"
    args = ("q4_0",) if call == "quantize" else ()
    report = getattr(bundler, call)(minilm_safetensors, dst, *args, dry_run=True)
    assert list(tmp_path.iterdir()) == []
    d = report.as_dict()
    assert d["written"] is False and d["outputs"] == []
    assert d["source_bytes"] == sum(t["source_bytes"] for t in d["tensors"]) > 0
    assert 0 < d["target_bytes"] <= d["source_bytes"]


def test_cli_dry_run_prints_the_plan_and_writes_nothing(minilm_safetensors, tmp_path):
    dst = tmp_path / "m.apr"
    done = run_cli("quantize", str(minilm_safetensors), "-o", str(dst), "--type", "Q4_0",
                   "--dry-run", "--json", check=True)  # fmt: skip
    report = json.loads(done.stdout)
    assert not dst.exists() and list(tmp_path.iterdir()) == []
    assert report["written"] is False and report["target_bytes"] < report["source_bytes"] / 5
    text = run_cli("quantize", str(minilm_safetensors), "-o", str(dst), "--type", "Q4_0",
                   "--dry-run", check=True).stdout  # fmt: skip
    assert "converting to q4_0" in text and "dry run: nothing written" in text


@pytest.mark.parametrize("call", ["quantize", "convert"])
def test_output_equal_to_input_is_refused(minilm_safetensors, tmp_path, call):
    src = tmp_path / "m.safetensors"
    os.symlink(minilm_safetensors, src)
    link = tmp_path / "other-name.safetensors"
    os.symlink(src, link)
    before = os.path.getsize(minilm_safetensors)
    args = ("q4_0",) if call == "quantize" else ()
    for dst in (src, link):
        with pytest.raises(UsageError, match="is the input"):
            getattr(bundler, call)(src, dst, *args, force=True)
    assert os.path.getsize(minilm_safetensors) == before


def test_cli_refuses_input_as_output_with_exit_2(minilm_safetensors):
    done = run_cli("convert", str(minilm_safetensors), "-o", str(minilm_safetensors), "--force")
    assert done.returncode == 2 and "is the input" in done.stderr
    assert "Traceback" not in done.stderr


@pytest.mark.parametrize("call", ["quantize", "convert"])
def test_existing_output_without_force_raises(minilm_safetensors, tmp_path, call):
    dst = tmp_path / "m.gguf"
    dst.write_bytes(b"old")
    args = ("q4_0",) if call == "quantize" else ()
    with pytest.raises(OutputExistsError, match="use --force"):
        getattr(bundler, call)(minilm_safetensors, dst, *args)
    assert dst.read_bytes() == b"old"
    getattr(bundler, call)(minilm_safetensors, dst, *args, force=True)
    assert read_gguf(dst)[0]


def test_cli_existing_output_without_force_exits_5(minilm_safetensors, tmp_path):
    dst = tmp_path / "m.gguf"
    dst.write_bytes(b"old")
    done = run_cli("quantize", str(minilm_safetensors), "-o", str(dst), "--type", "Q8_0")
    assert done.returncode == 5 and f"{dst}: already exists" in done.stderr
    assert dst.read_bytes() == b"old"


def test_import_bundler_does_not_load_the_compiler():
    import subprocess
    import sys

    code = "import bundler, sys; print('numba' in sys.modules, callable(bundler.save))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["False", "True"]


@pytest.mark.filterwarnings("ignore::bundler.errors.AprCompatibilityWarning")
@pytest.mark.parametrize("codec", ["apr_q4", "apr_q8"])
def test_aprender_codecs_by_tensor_type_give_the_bytes_of_one_encode(tmp_path, codec):
    # 2.4M values: more than one chunk (AprQ4 streams in runs of blocks, AprQ8 in two passes)
    x = np.random.default_rng(10).standard_normal((600, 4000), dtype=np.float32)
    src, name = tmp_path / "src.safetensors", "blk.0.ffn_up.weight"
    tensor = bundler.Tensor.from_array(name, x)
    bundler.Bundle({"general.architecture": "llama"}, [tensor]).save(src)
    bundler.quantize(src, tmp_path / "out.apr", "q8_0", tensor_types=[("ffn_up", codec)])
    got = bundler.open(tmp_path / "out.apr").tensors[name]
    assert got.codec.name == codec
    assert np.array_equal(got.raw().reshape(-1), bundler.codec(codec).encode(x).reshape(-1))


def test_a_conversion_to_a_float_type_loads_no_compiler(tmp_path):
    # F16 of tensors below floats.COMPILED_FROM values is a numpy conversion: the pipeline
    # must not import numba to count threads
    assert COMPILED_FROM > 60 * 4096
    x = np.random.default_rng(12).standard_normal((60, 4096), dtype=np.float32)
    src, name = tmp_path / "src.safetensors", "blk.0.ffn_up.weight"
    tensor = bundler.Tensor.from_array(name, x)
    bundler.Bundle({"general.architecture": "llama"}, [tensor]).save(src)
    out = tmp_path / "out.gguf"
    code = (
        f"import sys, bundler\nbundler.quantize({str(src)!r}, {str(out)!r}, 'f16')\n"
        "print('numba' in sys.modules)"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["False"]
    got = bundler.open(out).tensors[name]
    assert got.codec.name == "f16"
    assert np.array_equal(got.numpy(), x.astype(np.float16).astype(np.float32))
