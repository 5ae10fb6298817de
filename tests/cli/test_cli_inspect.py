"""`bundler inspect` through the installed command, on real files of all three formats."""

from __future__ import annotations

import json
import subprocess
import sys
from collections import Counter

import gguf
import pytest
from conftest import run_cli
from safetensors import safe_open


def _inspect_json(*args: str) -> dict:
    return json.loads(run_cli("inspect", *args, "--json", check=True).stdout)


@pytest.fixture(scope="module")
def oracle(smollm2_gguf):
    """The SmolLM2 file as the gguf package reads it."""
    return gguf.GGUFReader(smollm2_gguf)


@pytest.fixture(scope="module")
def smollm2_apr(smollm2_gguf, tmp_path_factory):
    out = tmp_path_factory.mktemp("inspect") / "smollm2.apr"
    run_cli("convert", str(smollm2_gguf), "-o", str(out), "-q", check=True)
    return out


def test_inspect_gguf_lists_every_tensor_and_key_as_the_gguf_package_reads_them(
    smollm2_gguf, oracle
):
    report = _inspect_json(str(smollm2_gguf))
    # GGUFReader adds three pseudo-fields for the header (GGUF.version, .tensor_count, .kv_count)
    assert len(report["metadata"]) == len(oracle.fields) - 3 == 33
    assert [t["name"] for t in report["tensors"]] == [t.name for t in oracle.tensors]
    assert len(report["tensors"]) == 272
    assert Counter(t["codec"] for t in report["tensors"]) == {"q4_1": 210, "f32": 61, "q8_0": 1}
    for row, t in zip(report["tensors"], oracle.tensors, strict=True):
        assert row["shape"] == [int(d) for d in reversed(t.shape)]
        assert row["bytes"] == int(t.n_bytes)
        assert row["offset"] == int(t.data_offset)
    tot = report["totals"]
    assert tot["tensors"] == 272
    assert tot["parameters"] == sum(int(t.n_elements) for t in oracle.tensors)
    q4_1 = [t for t in oracle.tensors if t.tensor_type == gguf.GGMLQuantizationType.Q4_1]
    assert tot["by_codec"]["q4_1"] == {
        "tensors": 210,
        "parameters": sum(int(t.n_elements) for t in q4_1),
        "bytes": sum(int(t.n_bytes) for t in q4_1),
    }
    c = report["container"]
    assert (c["format"], c["version"], c["byte_order"], c["alignment"]) == (
        "gguf",
        3,
        "little-endian",
        32,
    )


def test_inspect_summarizes_arrays_unless_full(smollm2_gguf, oracle):
    tokens = _inspect_json(str(smollm2_gguf))["metadata"]["tokenizer.ggml.tokens"]
    assert tokens["type"] == "ARRAY" and tokens["item_type"] == "STRING"
    assert tokens["count"] == 49152 and tokens["truncated"] is True
    assert tokens["value"][:3] == ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
    assert len(tokens["value"]) == 8
    full = _inspect_json(str(smollm2_gguf), "--full")["metadata"]["tokenizer.ggml.tokens"]
    assert len(full["value"]) == 49152 and full["truncated"] is False
    field = oracle.fields["tokenizer.ggml.tokens"]
    assert full["value"] == [str(bytes(field.parts[i]), "utf-8") for i in field.data]


def test_inspect_json_has_sorted_keys_and_raw_numbers(smollm2_gguf):
    out = run_cli("inspect", str(smollm2_gguf), "--json", check=True).stdout
    keys = list(json.loads(out)["metadata"])
    assert keys == sorted(keys)
    md = json.loads(out)["metadata"]
    assert md["llama.block_count"] == {"type": "UINT32", "value": 30}
    assert md["llama.rope.freq_base"] == {"type": "FLOAT32", "value": 100000.0}


def test_inspect_prints_tables_for_people(smollm2_gguf):
    out = run_cli("inspect", str(smollm2_gguf), check=True).stdout
    assert "GGUF v3, little-endian, alignment 32" in out
    assert "metadata (33 keys)" in out and "tensors (272)" in out
    assert "ARRAY[STRING] x 49,152" in out
    assert any(
        line.split()[:4] == ["0", "token_embd.weight", "49152x576", "q8_0"]
        for line in out.splitlines()
    )
    assert "totals: 272 tensors, 134,515,008 parameters" in out


def test_inspect_safetensors_matches_the_reference_reader(minilm_safetensors):
    report = _inspect_json(str(minilm_safetensors))
    with safe_open(minilm_safetensors, "np") as f:
        names = set(f.keys())
        shapes = {n: list(f.get_slice(n).get_shape()) for n in names}
    assert len(report["tensors"]) == 104
    assert {t["name"] for t in report["tensors"]} == names
    assert all(t["shape"] == shapes[t["name"]] for t in report["tensors"])
    assert report["container"]["format"] == "safetensors"
    assert report["metadata"] == {"format": {"type": "STRING", "value": "pt"}}


def test_inspect_apr_written_by_convert_shows_the_source_tensors(smollm2_apr, smollm2_gguf):
    apr = _inspect_json(str(smollm2_apr))
    src = _inspect_json(str(smollm2_gguf))
    assert apr["container"]["format"] == "apr" and apr["container"]["version"] == "2.0"
    assert "ROW_MAJOR" in apr["container"]["flag_names"]
    assert apr["metadata"] == src["metadata"]
    strip = [{k: t[k] for k in ("name", "shape", "codec", "bytes")} for t in src["tensors"]]
    assert [{k: t[k] for k in ("name", "shape", "codec", "bytes")} for t in apr["tensors"]] == strip
    assert apr["totals"] == src["totals"]


def test_inspect_split_gguf_from_any_shard_shows_the_whole_set(smollm2_gguf, tmp_path):
    out = tmp_path / "split.gguf"
    run_cli(
        "convert", str(smollm2_gguf), "-o", str(out), "--split-max-size", "40M", "-q", check=True
    )
    shards = sorted(tmp_path.glob("split-*.gguf"))
    assert len(shards) == 3
    report = _inspect_json(str(shards[1]))
    assert len(report["tensors"]) == 272 and len(report["metadata"]) == 33
    assert report["container"]["files"] == [str(s) for s in shards]
    assert {t["file"] for t in report["tensors"]} == {s.name for s in shards}


def test_inspect_sharded_safetensors_index_shows_every_shard(minilm_safetensors, tmp_path):
    out = tmp_path / "model.safetensors"
    run_cli(
        "convert",
        str(minilm_safetensors),
        "-o",
        str(out),
        "--split-max-size",
        "30M",
        "-q",
        check=True,
    )
    index = tmp_path / "model.safetensors.index.json"
    report = _inspect_json(str(index))
    assert len(report["tensors"]) == 104
    assert len({t["file"] for t in report["tensors"]}) == len(list(tmp_path.glob("model-*")))
    assert report["totals"] == _inspect_json(str(minilm_safetensors))["totals"]


@pytest.mark.parametrize("fixture", ["smollm2_gguf", "minilm_safetensors", "smollm2_apr"])
def test_inspect_imports_no_compiler(fixture, request):
    path = str(request.getfixturevalue(fixture))
    code = (
        "import sys\nfrom bundler.cli import main\n"
        f"assert main(['inspect', {path!r}, '--json']) == 0\n"
        "print(' '.join(sorted(sys.modules)), file=sys.stderr)"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    loaded = set(done.stderr.split())
    assert "numba" not in loaded and "llvmlite" not in loaded
