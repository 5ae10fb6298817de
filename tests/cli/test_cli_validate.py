"""`bundler validate` through the installed command: real files pass; files broken on
purpose (a NaN or infinite scale, a flipped byte, a name llama.cpp refuses) fail with the
place of the problem."""

from __future__ import annotations

import functools
import json
import shutil
import struct

import gguf
import numpy as np
import pytest
from conftest import run_cli, run_cli_clean, run_cli_json

NAN_HALF = struct.pack("<H", 0x7E00)
INF_HALF = struct.pack("<H", 0x7C00)


_validate = functools.partial(run_cli_clean, "validate")
_validate_json = functools.partial(run_cli_json, "validate")


@pytest.fixture(scope="module")
def smollm2_layout(smollm2_gguf):
    """Name -> (file offset of the data, GGML type) of every SmolLM2 tensor, from gguf."""
    reader = gguf.GGUFReader(smollm2_gguf)
    return {t.name: (int(t.data_offset), t.tensor_type) for t in reader.tensors}


@pytest.fixture(scope="module")
def minilm_apr(minilm_safetensors, tmp_path_factory):
    out = tmp_path_factory.mktemp("validate") / "minilm.apr"
    run_cli("convert", str(minilm_safetensors), "-o", str(out), "-q", check=True)
    return out


def _patched(src, tmp_path, patches: dict[int, bytes], name: str = "patched.gguf"):
    out = tmp_path / name
    shutil.copyfile(src, out)
    with open(out, "r+b") as f:
        for offset, data in patches.items():
            f.seek(offset)
            f.write(data)
    return out


@pytest.mark.parametrize("fixture", ["smollm2_gguf", "minilm_safetensors", "minilm_apr"])
def test_real_files_are_valid_even_strictly_as_json(fixture, request):
    path = str(request.getfixturevalue(fixture))
    code, report = _validate_json(path, "--strict")
    assert code == 0, report["errors"]
    assert report["valid"] is True and report["errors"] == [] and report["warnings"] == []
    assert report["parsed"] is True and report["strict"] is True


def test_real_gguf_scales_are_all_scanned(smollm2_gguf):
    code, report = _validate_json(str(smollm2_gguf))
    assert code == 0
    assert report["scanned_tensors"] == 211  # 210 q4_1 + 1 q8_0; f32 tensors have no scales
    assert report["tensors"] == 272


def test_human_output_says_valid(smollm2_gguf):
    done = _validate(str(smollm2_gguf))
    assert done.returncode == 0 and ": gguf: valid;" in done.stdout


@pytest.mark.parametrize(
    ("tensor", "field_at", "field"),
    [
        ("blk.3.attn_q.weight", 0, "d"),
        ("blk.3.attn_q.weight", 2, "m"),
        ("token_embd.weight", 0, "d"),
    ],
)
def test_a_nan_scale_fails_naming_tensor_and_block(
    smollm2_gguf, smollm2_layout, tmp_path, tensor, field_at, field
):
    start, ggml_type = smollm2_layout[tensor]
    block_bytes = gguf.GGML_QUANT_SIZES[ggml_type][1]
    at = start + 17 * block_bytes + field_at
    bad = _patched(smollm2_gguf, tmp_path, {at: NAN_HALF})
    code, report = _validate_json(str(bad))
    assert code == 5 and report["valid"] is False and report["parsed"] is True
    (error,) = report["errors"]
    assert (error["tensor"], error["blocks"], error["offset"]) == (tensor, [17], at)
    assert error["rule"] == "nan-scale" and f"scale {field} of block 17" in error["message"]
    done = _validate(str(bad))
    assert done.returncode == 5
    assert f"'{tensor}'" in done.stdout and "block 17 (row 0, block 17 of the row)" in done.stdout
    assert f"at byte {at:,}" in done.stdout and "NaN" in done.stdout


def test_many_nan_scales_are_counted_in_one_error(smollm2_gguf, smollm2_layout, tmp_path):
    start, _ = smollm2_layout["blk.0.attn_k.weight"]
    blocks = list(range(0, 40, 3))
    bad = _patched(smollm2_gguf, tmp_path, {start + 20 * b: NAN_HALF for b in blocks})
    code, report = _validate_json(str(bad))
    (error,) = report["errors"]
    assert code == 5 and error["blocks"] == blocks[:10]
    assert f"{len(blocks)} blocks" in error["message"] and "and 4 more" in error["message"]


def test_an_infinite_scale_is_a_warning_not_an_error(smollm2_gguf, smollm2_layout, tmp_path):
    start, _ = smollm2_layout["blk.5.ffn_up.weight"]
    # row 1 of the tensor: 576 values per row, 18 blocks of 32
    bad = _patched(smollm2_gguf, tmp_path, {start + 20 * 20: INF_HALF})
    code, report = _validate_json(str(bad))
    assert code == 0 and report["valid"] is True and report["errors"] == []
    (warning,) = report["warnings"]
    assert warning["rule"] == "inf-scale" and warning["tensor"] == "blk.5.ffn_up.weight"
    assert "block 20 (row 1, block 2 of the row)" in warning["message"]


def test_an_apr_with_a_flipped_data_byte_fails_its_footer_crc(minilm_apr, tmp_path):
    size = minilm_apr.stat().st_size
    data = bytearray(minilm_apr.read_bytes()[size // 2 : size // 2 + 1])
    bad = _patched(minilm_apr, tmp_path, {size // 2: bytes([data[0] ^ 0x10])}, "bad.apr")
    code, report = _validate_json(str(bad))
    assert code == 5 and report["parsed"] is True
    (error,) = report["errors"]
    assert error["rule"] == "checksum" and "footer CRC mismatch" in error["message"]
    assert error["offset"] == size - 4
    done = _validate(str(bad))
    assert done.returncode == 5 and "footer CRC mismatch" in done.stdout


def test_an_apr_with_a_flipped_header_byte_fails_its_header_crc(minilm_apr, tmp_path):
    bad = _patched(minilm_apr, tmp_path, {8: b"\x7f"}, "bad.apr")  # tensor_count
    code, report = _validate_json(str(bad))
    assert code == 5
    assert "header CRC mismatch" in report["errors"][0]["message"]


def _gguf_with_tensor_named(path, name: str) -> None:
    writer = gguf.GGUFWriter(str(path), "llama")
    writer.add_tensor(name, np.ones((2, 32), np.float32))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()


def test_strict_flags_a_tensor_name_llama_cpp_refuses(tmp_path):
    path = tmp_path / "long-name.gguf"
    name = "blk.0." + "x" * 60 + ".weight"  # 73 bytes; llama.cpp allows 63
    _gguf_with_tensor_named(path, name)
    code, report = _validate_json(str(path))
    assert code == 0 and report["valid"] is True
    code, report = _validate_json(str(path), "--strict")
    assert code == 5
    (error,) = report["errors"]
    assert error["rule"] == "llama.cpp" and name in error["message"] and "63" in error["message"]


def test_strict_flags_apr_codes_aprender_does_not_know(smollm2_gguf, tmp_path):
    out = tmp_path / "smollm2.apr"
    run_cli("convert", str(smollm2_gguf), "-o", str(out), "-q", check=True)
    assert _validate_json(str(out))[0] == 0
    code, report = _validate_json(str(out), "--strict")
    assert code == 5
    messages = " ".join(e["message"] for e in report["errors"])
    assert "dtype code 67 (q4_1" in messages and "dtype code 72 (q8_0" in messages


def test_split_gguf_and_sharded_safetensors_are_valid(smollm2_gguf, minilm_safetensors, tmp_path):
    run_cli(
        "convert", str(smollm2_gguf), "-o", str(tmp_path / "s.gguf"),
        "--split-max-size", "40M", "-q", check=True,
    )  # fmt: skip
    run_cli(
        "convert", str(minilm_safetensors), "-o", str(tmp_path / "m.safetensors"),
        "--split-max-size", "30M", "-q", check=True,
    )  # fmt: skip
    for path in (tmp_path / "s-00002-of-00003.gguf", tmp_path / "m.safetensors.index.json"):
        code, report = _validate_json(str(path), "--strict")
        assert code == 0 and report["valid"], report["errors"]
        assert len(report["files"]) >= 3


@pytest.mark.parametrize("json_flag", [[], ["--json"]], ids=["human", "json"])
def test_a_file_that_cannot_be_read_is_reported_once(smollm2_gguf, tmp_path, json_flag):
    cut = tmp_path / "cut.gguf"
    cut.write_bytes(smollm2_gguf.read_bytes()[:100])
    done = _validate(str(cut), *json_flag)
    assert done.returncode == 4
    problem = "kv_count 33 cannot be right"
    assert done.stderr.count(problem) == 1
    assert done.stderr.startswith(f"bundler: error: {cut} at byte 16: {problem}")
    if json_flag:  # the report keeps it for scripts
        assert json.loads(done.stdout)["errors"][0]["message"].startswith(problem)
    else:
        assert problem not in done.stdout and "cannot be read as a model" in done.stdout
