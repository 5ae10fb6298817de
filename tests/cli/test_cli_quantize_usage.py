"""`bundler quantize` / `convert` with the options people get wrong on first use: each a
usage error (exit 2) with one clear line, before any work and without writing anything;
and an APR output with codecs aprender cannot read, whose warning says what to do instead."""

from __future__ import annotations

import pytest
from conftest import run_cli, run_cli_clean

from bundler.codecs import TABLE
from bundler.plan.rules import NEEDS_IMPORTANCE


def _usage_error(*args: str, cwd) -> str:
    done = run_cli_clean(*args, cwd=cwd)
    assert done.returncode == 2, done.stderr
    return done.stderr


def test_an_invalid_tensor_type_regex_is_a_usage_error(minilm_safetensors, tmp_path):
    err = _usage_error(
        "quantize", str(minilm_safetensors), "-o", "out.gguf", "--type", "q8_0",
        "--tensor-type", "bad[=q8_0", cwd=tmp_path,
    )  # fmt: skip
    assert "argument --tensor-type: 'bad[' is not a regular expression" in err
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("command", [["convert"], ["quantize", "--type", "q8_0"]])
def test_an_existing_directory_as_output_fails_before_any_work(
    minilm_safetensors, tmp_path, command
):
    out = tmp_path / "out"
    out.mkdir()
    err = _usage_error(command[0], str(minilm_safetensors), *command[1:], "-o", str(out),
                       "--force", cwd=tmp_path)  # fmt: skip
    assert err.strip() == (
        f"bundler: error: the output {out} is a directory; give a file name (e.g. "
        f"{out}/model.gguf), or --to safetensors for a model folder"
    )
    assert list(out.iterdir()) == []


@pytest.mark.parametrize(
    ("name", "to", "ext"), [("out.gguf", "apr", "apr"), ("out.apr", "safetensors", "safetensors")]
)
def test_an_extension_that_names_another_format_than_to_is_a_usage_error(
    minilm_safetensors, tmp_path, name, to, ext
):
    err = _usage_error("convert", str(minilm_safetensors), "-o", name, "--to", to, cwd=tmp_path)
    assert f"but the format asked is {to}; give it the .{ext} extension or drop --to" in err
    assert list(tmp_path.iterdir()) == []


def test_to_with_an_extension_no_format_claims_is_fine(minilm_safetensors, tmp_path):
    done = run_cli("convert", str(minilm_safetensors), "-o", "out.bin", "--to", "gguf", "-q",
                   cwd=tmp_path)  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert (tmp_path / "out.bin").read_bytes()[:4] == b"GGUF"


@pytest.mark.parametrize(
    "name", ["IQ1_S", "iq1_m", "IQ2_XXS", "IQ2_XS", "IQ2_S", "IQ2_M", "Q2_K_S"]
)
def test_a_low_bit_file_type_without_an_importance_matrix_says_to_pass_imatrix(
    smollm2_gguf, tmp_path, name
):
    # SmolLM2's ffn_down rows (1,536) take the file type's codec: llama-quantize refuses it
    err = _usage_error("quantize", str(smollm2_gguf), "-o", "o.gguf", "--type", name,
                       "--allow-requantize", cwd=tmp_path)  # fmt: skip
    assert f"--type {name.upper()} needs an importance matrix" in err
    assert "27 tensors would get it: blk.3.ffn_down.weight" in err
    assert "pass --imatrix FILE" in err
    assert list(tmp_path.iterdir()) == []


#: Block codecs bundler stores and copies but cannot encode yet (and needing no matrix).
PENDING = [
    f.name for f in TABLE if f.is_block and not f.has_kernels and f.name not in NEEDS_IMPORTANCE
]


@pytest.mark.parametrize("codec", PENDING or [pytest.param("-", marks=pytest.mark.skip("none"))])
def test_a_codec_bundler_cannot_encode_yet_is_refused_before_any_work(
    smollm2_gguf, tmp_path, codec
):
    err = _usage_error("quantize", str(smollm2_gguf), "-o", "o.gguf", "--type", "Q8_0",
                       "--tensor-type", f"ffn_down={codec}", "--allow-requantize",
                       cwd=tmp_path)  # fmt: skip
    assert f"--type Q8_0 writes 30 tensors as {codec} (blk.0.ffn_down.weight, " in err
    assert f"but bundler has no {codec} encoder yet" in err
    assert list(tmp_path.iterdir()) == []


def test_an_unknown_type_lists_the_presets_and_the_codecs(minilm_safetensors, tmp_path):
    err = _usage_error("quantize", str(minilm_safetensors), "-o", "o.gguf", "--type", "Q9_X",
                       cwd=tmp_path)  # fmt: skip
    assert "unknown --type 'Q9_X'; file types: F32, F16, Q4_0" in err
    assert "Q4_K_M" in err and "Q3_K_L" in err and "codecs: f32" in err and "apr_q4" in err


@pytest.mark.parametrize("name", ["i8", "u32"])
def test_a_type_that_is_not_a_weight_codec_is_refused(minilm_safetensors, tmp_path, name):
    err = _usage_error("quantize", str(minilm_safetensors), "-o", "o.gguf", "--type", name,
                       cwd=tmp_path)  # fmt: skip
    assert f"bundler does not quantize weights to {name}" in err


def test_q4_0_into_apr_warns_naming_the_flag_and_the_codec_to_use(minilm_safetensors, tmp_path):
    done = run_cli("quantize", str(minilm_safetensors), "-o", "q4_0.apr", "--type", "Q4_0", "-q",
                   cwd=tmp_path)  # fmt: skip
    assert done.returncode == 0, done.stderr
    # the one line besides a first run's compile notice
    lines = [x for x in done.stderr.splitlines() if not x.startswith("bundler: compiling ")]
    assert len(lines) == 1 and lines[0].startswith("bundler: warning: ")
    warning = lines[0]
    assert "--aprender" in warning and "--type apr_q4" in warning
    assert "validate --strict" in warning
    strict = run_cli("validate", "--strict", "q4_0.apr", cwd=tmp_path)
    assert strict.returncode == 5

    # what the warning suggests gives a file aprender reads
    done = run_cli("quantize", str(minilm_safetensors), "-o", "apr_q4.apr", "--type", "apr_q4",
                   "--aprender", "-q", cwd=tmp_path)  # fmt: skip
    assert done.returncode == 0 and "warning" not in done.stderr
    strict = run_cli("validate", "--strict", "apr_q4.apr", "--json", cwd=tmp_path)
    assert strict.returncode == 0, strict.stdout
    listed = run_cli("inspect", "apr_q4.apr", "--json", cwd=tmp_path, check=True).stdout
    assert '"codec": "apr_q4"' in listed


def test_aprender_refuses_q4_0_into_apr(minilm_safetensors, tmp_path):
    done = run_cli("quantize", str(minilm_safetensors), "-o", "q4_0.apr", "--type", "Q4_0",
                   "--aprender", cwd=tmp_path)  # fmt: skip
    assert done.returncode == 2 and "aprender cannot read these tensors" in done.stderr
    assert list(tmp_path.iterdir()) == []
