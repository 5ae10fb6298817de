"""Size targets in batch and config runs (`target_size` / `target_bpw` per model entry,
`batch --target-size/--target-bpw`): planned by the same allocation as `quantize
--target-size`, so each output equals its output byte for byte, fits its target, and the
results carry the mix and the predicted and actual sizes; a bad target in a config is an
error naming the file, the line and the entry."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from batch_zoo import generated
from conftest import run_cli

from bundler.errors import EXIT_USAGE


@pytest.fixture(scope="module")
def models(tmp_path_factory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("targets")
    return {
        "a": generated(d / "gen-a.gguf", 1),
        "b": generated(d / "gen-b.safetensors", 2, rows=128, cols=1024),
    }


def quantized(src: Path, dst: Path, *flags: str) -> bytes:
    done = run_cli("quantize", str(src), "-o", str(dst), *flags)
    assert done.returncode == 0, done.stderr
    return dst.read_bytes()


def check_allocation(result: dict, target_bytes: int) -> None:
    found = result["allocation"]
    assert result["status"] == "ok", result
    assert found["target_bytes"] == target_bytes
    assert (
        found["actual_bytes"] == found["predicted_bytes"] == Path(result["output"]).stat().st_size
    )
    assert found["actual_bytes"] <= target_bytes
    assert found["actual_bytes"] >= 0.9 * target_bytes  # the bytes are spent, not wasted
    assert sum(found["mix"].values()) == 3 and found["free_tensors"] == 3
    assert len(found["mix"]) >= 1 and found["relative_error"] > 0


CONFIG = """\
continue_on_error: false
models:
  - input: {a}
    output_dir: out/
    target_size: [300K, 250000]
  - input: {b}
    output_dir: out/
    to: gguf
    target_bpw: 5.5
    candidates: q4_k,q5_k,q6_k,q8_0
  - input: {a}
    output: out/plain.gguf
    type: Q8_0
"""


def test_config_targets_write_what_quantize_target_size_writes(models, tmp_path):
    config = tmp_path / "zoo.yaml"
    config.write_text(CONFIG.format(**models))
    done = run_cli("run", str(config), "--json")
    assert done.returncode == 0, done.stderr
    results = {Path(r["output"]).name: r for r in json.loads(done.stdout)["results"]}
    assert sorted(results) == ["gen-a-TARGET-250K.gguf", "gen-a-TARGET-300K.gguf",
                               "gen-b-TARGET-5.5BPW.gguf", "plain.gguf"]  # fmt: skip
    assert results["gen-a-TARGET-300K.gguf"]["type"] == "target-300K"
    assert results["plain.gguf"]["allocation"] is None
    out = tmp_path / "out"
    ref = tmp_path / "ref"
    ref.mkdir()
    for name, src, flags, target in (
        ("gen-a-TARGET-300K.gguf", models["a"], ["--target-size", "300K"], 300_000),
        ("gen-a-TARGET-250K.gguf", models["a"], ["--target-size", "250000"], 250_000),
        (
            "gen-b-TARGET-5.5BPW.gguf", models["b"],
            ["--target-bpw", "5.5", "--candidates", "q4_k,q5_k,q6_k,q8_0"],
            int(5.5 * 3 * 128 * 1024 // 8),
        ),
    ):  # fmt: skip
        check_allocation(results[name], target)
        assert (out / name).read_bytes() == quantized(src, ref / name, *flags), name
    mixes = {n: r["allocation"]["mix"] for n, r in results.items() if r["allocation"]}
    assert mixes["gen-a-TARGET-300K.gguf"] != mixes["gen-a-TARGET-250K.gguf"]
    assert set(mixes["gen-b-TARGET-5.5BPW.gguf"]) <= {"q4_k", "q5_k", "q6_k", "q8_0"}


def test_batch_target_flags_write_what_quantize_writes(models, tmp_path):
    done = run_cli(
        "batch", str(models["a"]), str(models["b"]), "-o", str(tmp_path / "out"),
        "--target-size", "280K", "--to", "gguf", "--report", str(tmp_path / "r.json"),
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert "target-280K" in done.stdout  # the closing table's type column
    results = json.loads((tmp_path / "r.json").read_text())["results"]
    assert [Path(r["output"]).name for r in results] == [
        "gen-a-TARGET-280K.gguf", "gen-b-TARGET-280K.gguf"
    ]  # fmt: skip
    for r, src in zip(results, (models["a"], models["b"]), strict=True):
        check_allocation(r, 280_000)
        assert Path(r["output"]).read_bytes() == quantized(
            src, tmp_path / Path(r["output"]).name, "--target-size", "280K"
        )


def test_batch_dry_run_reports_the_planned_target_without_writing(models, tmp_path):
    done = run_cli(
        "batch", str(models["a"]), "-o", str(tmp_path / "out"), "--target-bpw", "5", "--dry-run",
        "--json",
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    (r,) = json.loads(done.stdout)["results"]
    assert r["status"] == "planned" and r["allocation"]["actual_bytes"] is None
    assert r["allocation"]["predicted_bytes"] <= r["allocation"]["target_bytes"]
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize(
    ("flags", "problem"),
    [
        (["--target-size", "80M", "--type", "Q4_K_M"], "drop --type"),
        (["--target-bpw", "4", "--pure"], "drop --pure"),
        (["--target-size", "lots"], "not a size"),
        (["--target-bpw", "-3"], "must be a positive number"),
        (["--candidates", "q4_k"], "--candidates needs --target-size"),
        (["--target-size", "80M", "--candidates", "q9_k"], "q9_k"),
    ],
)
def test_batch_bad_targets_are_usage_errors(models, tmp_path, flags, problem):
    done = run_cli("batch", str(models["a"]), "-o", str(tmp_path / "out"), *flags)
    assert done.returncode == EXIT_USAGE, done.stderr
    assert problem in done.stderr and "Traceback" not in done.stderr
    assert not (tmp_path / "out").exists()


ENTRY = """\
models:
  - input: {a}
    output_dir: out/
    type: Q8_0
  - input: {a}
    output_dir: out2/
"""


#: Bad values of the target keys: (YAML lines added to the second entry, the line the error
#: names, the key, what it says).
BAD_TARGETS = [
    ("    target_size: lots\n", 7, "target_size", "not a size"),
    ("    target_size: [80M, 80M]\n", 7, "target_size", "twice"),
    ("    target_size: []\n", 7, "target_size", "non-empty list"),
    ("    target_bpw: -2\n", 7, "target_bpw", "positive number"),
    ("    target_bpw: '4.5'\n", 7, "target_bpw", "must be a number"),
    ("    target_bpw: 4\n    type: Q4_0\n", 7, "target_bpw", "not several"),
    ("    target_size: 1M\n    target_bpw: 4\n", 8, "target_bpw", "not several"),
]
#: Keys that go with a target or a text, given wrongly.
BAD_COMPANIONS = [
    ("    target_size: 1M\n    pure: true\n", 7, "target_size", "excludes pure"),
    ("    target_size: 1M\n    candidates: q9_k\n", 8, "candidates", "q9_k"),
    ("    candidates: q4_k\n", 7, "candidates", "only with target_size"),
    ("    text: t.txt\n    imatrix: m.gguf\n", 7, "text", "not both"),
    ("    text_ctx: 128\n", 7, "text_ctx", "applies only with text"),
    ("    text_chunks: 0\n", 7, "text_chunks", "at least 1"),
]


def _refused_naming_file_line_and_key(models, tmp_path, extra, line, key, problem) -> None:
    config = tmp_path / "bad.yaml"
    config.write_text(ENTRY.format(**models) + extra)
    done = run_cli("run", str(config))
    assert done.returncode == EXIT_USAGE, done.stderr
    where = f"{config}:{line}: models[1].{key}: "
    assert where in done.stderr and problem in done.stderr, done.stderr
    assert "Traceback" not in done.stderr
    assert not (tmp_path / "out").exists() and not (tmp_path / "out2").exists()


@pytest.mark.parametrize(("extra", "line", "key", "problem"), BAD_TARGETS)
def test_config_bad_targets_name_file_line_and_entry(models, tmp_path, extra, line, key, problem):
    _refused_naming_file_line_and_key(models, tmp_path, extra, line, key, problem)


@pytest.mark.parametrize(("extra", "line", "key", "problem"), BAD_COMPANIONS)
def test_config_keys_beside_a_target_or_text_are_checked_naming_the_entry(
    models, tmp_path, extra, line, key, problem
):
    _refused_naming_file_line_and_key(models, tmp_path, extra, line, key, problem)


def test_config_target_below_the_smallest_file_names_the_entry(models, tmp_path):
    config = tmp_path / "small.toml"
    config.write_text(
        f'continue_on_error = true\n\n[[models]]\ninput = "{models["a"]}"\n'
        f'output_dir = "out/"\ntarget_size = "10K"\n\n[[models]]\ninput = "{models["a"]}"\n'
        f'output_dir = "out/"\ntype = "Q8_0"\n'
    )
    done = run_cli("run", str(config), "--json")
    assert done.returncode == EXIT_USAGE, done.stderr
    failed, good = json.loads(done.stdout)["results"]
    assert failed["status"] == "failed" and failed["error_type"] == "UsageError"
    assert failed["error"].startswith(f"{config}:3: target_size: {models['a']}: ")
    assert "smallest" in failed["error"] or "at least" in failed["error"], failed["error"]
    assert good["status"] == "ok" and Path(good["output"]).exists()
    assert not Path(failed["output"]).exists()


@pytest.mark.slow
@pytest.mark.realfile
def test_smollm2_config_target_equals_quantize_target_size(smollm2_f32_gguf, tmp_path):
    config = tmp_path / "smollm2.toml"
    config.write_text(
        f'[[models]]\ninput = "{smollm2_f32_gguf}"\noutput = "out/smollm2-80M.gguf"\n'
        'target_size = "80M"\n'
    )
    done = run_cli("run", str(config), "--json")
    assert done.returncode == 0, done.stderr
    (r,) = json.loads(done.stdout)["results"]
    found = r["allocation"]
    assert found["actual_bytes"] == found["predicted_bytes"] <= 80_000_000
    assert found["actual_bytes"] >= 79_000_000
    assert len(found["mix"]) >= 2
    out = tmp_path / "out" / "smollm2-80M.gguf"
    assert out.read_bytes() == quantized(
        smollm2_f32_gguf, tmp_path / "q.gguf", "--target-size", "80M"
    )


@pytest.mark.long  # 93 s on the AMD host; quantize --text itself runs by default
@pytest.mark.slow
@pytest.mark.realfile
def test_a_config_text_measures_the_matrix_as_quantize_text_does(
    llama_runtime, smollm2_f32_gguf, readme_md, tmp_path
):
    config = tmp_path / "measured.yaml"
    config.write_text(
        f"models:\n  - input: {smollm2_f32_gguf}\n    output: out/measured.gguf\n"
        f"    target_bpw: 5\n    text: {readme_md}\n    text_ctx: 128\n    text_chunks: 4\n"
    )
    done = run_cli("run", str(config), "--json")
    assert done.returncode == 0, done.stderr
    (r,) = json.loads(done.stdout)["results"]
    assert r["allocation"]["sensitivity"] == f"importance matrix measured over {readme_md}"
    out = tmp_path / "out" / "measured.gguf"
    assert out.read_bytes() == quantized(
        smollm2_f32_gguf, tmp_path / "q.gguf", "--target-bpw", "5", "--text", str(readme_md),
        "--ctx", "128", "--chunks", "4",
    )  # fmt: skip
