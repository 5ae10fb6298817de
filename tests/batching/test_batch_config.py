"""`bundler run CONFIG`: quantize-rs's YAML and a TOML twin give identical outputs; the
richer schema's defaults, overrides, globs and several types; every config error names
the file, line and key before any conversion starts."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from batch_zoo import TYPE, expected, outputs, partials, zoo
from conftest import run_cli

import bundler
from bundler.errors import EXIT_NOT_FOUND, EXIT_USAGE

QUANTIZE_RS_YAML = """\
bits: 8
per_channel: true
models:
  - input: {gen_a}
    output: single/gen-a-int8.gguf
batch:
  input_dir: "{zoo}/*.safetensors"
  output_dir: quantized/
  skip_existing: true
"""

QUANTIZE_RS_TOML = """\
bits = 8
per_channel = true

[[models]]
input = "{gen_a}"
output = "single/gen-a-int8.gguf"

[batch]
input_dir = "{zoo}/*.safetensors"
output_dir = "quantized/"
skip_existing = true
"""


def tree(root: Path) -> dict[str, bytes]:
    return {
        str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()
    }


def write(path: Path, text: str, zoo) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text.format(zoo=zoo[0].parent, gen_a=zoo[1]))
    return path


def test_quantize_rs_yaml_and_its_toml_twin_give_identical_outputs(zoo, expected, tmp_path):
    runs = {}
    for name, text in (("yaml", QUANTIZE_RS_YAML), ("toml", QUANTIZE_RS_TOML)):
        config = write(tmp_path / name / f"models.{name}", text, zoo)
        done = run_cli("run", str(config), "--json")
        assert done.returncode == 0, done.stderr
        assert [r["status"] for r in json.loads(done.stdout)["results"]] == ["ok"] * 3
        config.unlink()
        runs[name] = tree(tmp_path / name)
    assert runs["yaml"] == runs["toml"]
    assert sorted(runs["yaml"]) == [
        "quantized/gen-b-INT8-CHANNEL.safetensors",
        "quantized/minilm-INT8-CHANNEL.safetensors",
        "single/gen-a-int8.gguf",
    ]  # fmt: skip
    # quantize-rs's bits: 8 with per_channel is `quantize --bits 8 --per-channel`
    alone = tmp_path / "alone.gguf"
    bundler.quantize(zoo[1], alone, "int8:channel")
    assert runs["yaml"]["single/gen-a-int8.gguf"] == alone.read_bytes()


RICH = """\
type: Q8_0
allow_requantize: true
output_dir: out
template: "{{stem}}-{{type}}.{{ext}}"
continue_on_error: true
models:
  - input: "{zoo}/gen-*"
    types: [Q8_0, F16]
  - input: {zoo}/smollm2.gguf
    to: safetensors
    tensor_types: {{"token_embd": F16}}
"""


def test_rich_config_applies_defaults_overrides_globs_and_several_types(zoo, expected, tmp_path):
    config = write(tmp_path / "rich.yaml", RICH, zoo)
    dry = run_cli("run", str(config), "--dry-run", "--json")
    assert dry.returncode == 0, dry.stderr
    planned = [(Path(r["output"]).name, r["status"]) for r in json.loads(dry.stdout)["results"]]
    assert planned == [
        ("gen-a-Q8_0.gguf", "planned"), ("gen-a-F16.gguf", "planned"),
        ("gen-b-Q8_0.safetensors", "planned"), ("gen-b-F16.safetensors", "planned"),
        ("smollm2-Q8_0.safetensors", "planned"),
    ]  # fmt: skip
    assert not (tmp_path / "out").exists()
    done = run_cli("run", str(config), "--json")
    assert done.returncode == 0, done.stderr
    got = outputs(tmp_path / "out")
    assert got["gen-a-Q8_0.gguf"] == expected["gen-a-Q8_0.gguf"]
    assert got["gen-b-Q8_0.safetensors"] == expected["gen-b-Q8_0.safetensors"]
    smol = bundler.open(tmp_path / "out" / "smollm2-Q8_0.safetensors")
    assert smol.tensors["token_embd.weight"].codec.name == "f16"
    gen_a = bundler.open(tmp_path / "out" / "gen-a-F16.gguf")
    assert gen_a.tensors["blk.0.ffn_up.weight"].codec.name == "f16"
    assert partials(tmp_path) == []


BASE = """\
type: Q8_0
output_dir: out
models:
  - input: {gen_a}
  - input: {zoo}/gen-b.safetensors
"""


TOML_BASE = 'type = "Q8_0"\noutput_dir = "out"\n\n[[models]]\ninput = "{gen_a}"\n'
UNKNOWN = "unknown key (did you mean 'type'?)"
BOOL = "must be true or false"
MISSING = BASE.replace("gen-b.safetensors", "gone.gguf")
TOML_MISSING = TOML_BASE.replace("{gen_a}", "{zoo}/nothing-*.gguf")


@pytest.mark.parametrize(
    ("ext", "text", "line", "key", "problem", "code"),
    [
        ("yaml", BASE + "    tpye: Q4_0\n", 6, "models[1].tpye", UNKNOWN, EXIT_USAGE),
        ("yaml", BASE + "    pure: yes please\n", 6, "models[1].pure", BOOL, EXIT_USAGE),
        ("yaml", MISSING, 5, "models[1].input", "no such file", EXIT_NOT_FOUND),
        ("yaml", "jobs: two\n" + BASE, 1, "jobs", "must be an integer", EXIT_USAGE),
        ("yaml", BASE + "    type: Q9_9\n", 6, "models[1].type", "Q9_9", EXIT_USAGE),
        ("toml", TOML_BASE * 2 + 'tpye = "Q4_0"\n', 11, "models[1].tpye", UNKNOWN, EXIT_USAGE),
        ("toml", TOML_BASE + "pure = 1\n", 6, "models[0].pure", BOOL, EXIT_USAGE),
        ("toml", TOML_MISSING, 5, "models[0].input", "matches no file", EXIT_NOT_FOUND),
    ],
)
def test_config_errors_name_file_line_and_key_before_any_conversion(
    zoo, tmp_path, ext, text, line, key, problem, code
):
    config = write(tmp_path / f"bad.{ext}", text, zoo)
    done = run_cli("run", str(config))
    assert done.returncode == code, done.stderr
    assert f"{config}:{line}: {key}: " in done.stderr and problem in done.stderr
    assert "Traceback" not in done.stderr
    assert not (tmp_path / "out").exists()


def test_every_problem_of_a_config_is_listed_at_once(zoo, tmp_path):
    config = write(tmp_path / "bad.yaml", BASE + "    tpye: Q4_0\n    pure: 2\nforce: maybe\n", zoo)
    done = run_cli("run", str(config))
    assert done.returncode == EXIT_USAGE
    assert "3 problems" in done.stderr
    for place in (":6: models[1].tpye", ":7: models[1].pure", ":8: force"):
        assert place in done.stderr


def test_planoptions_fields_are_all_config_keys():
    from dataclasses import fields

    from bundler.batching.schema import MODEL_KEYS, TOP_KEYS
    from bundler.plan import PlanOptions

    for f in fields(PlanOptions):
        assert f.name in TOP_KEYS and f.name in MODEL_KEYS
