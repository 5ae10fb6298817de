"""`bundler batch` through real subprocess runs on a zoo with one broken file in the middle."""

from __future__ import annotations

import json
import os

import pytest
from batch_zoo import TYPE, expected, outputs, partials, zoo
from conftest import run_cli

import bundler
from bundler.errors import EXIT_INVALID_FORMAT, EXIT_NOT_FOUND, EXIT_USAGE, EXIT_VALIDATION


def batch(zoo, out, *flags):
    return run_cli(
        "batch", *map(str, zoo), "-o", str(out), "--type", TYPE, "--allow-requantize", *flags
    )


def test_continue_on_error_converts_every_other_model_and_reports_the_broken_one(
    zoo, expected, tmp_path
):
    out, report = tmp_path / "out", tmp_path / "report.json"
    done = batch(zoo, out, "--continue-on-error", "--report", str(report))
    assert done.returncode == EXIT_INVALID_FORMAT, done.stderr
    assert outputs(out) == expected  # byte-identical to converting each model alone
    assert partials(tmp_path) == []
    data = json.loads(report.read_text())
    assert [r["status"] for r in data["results"]] == ["ok", "ok", "failed", "ok", "ok"]
    broken = data["results"][2]
    assert broken["error_type"] == "TruncatedError" and "broken.gguf" in broken["error"]
    assert broken["exit_code"] == EXIT_INVALID_FORMAT and not data["ok"]
    assert (
        "broken.gguf: TruncatedError" in done.stderr and "1 of 5 conversions failed" in done.stderr
    )
    lines = done.stdout.splitlines()
    table = lines[[line.split()[:3] for line in lines].index(["model", "type", "status"]) :]
    assert sum(" failed " in line for line in table) == 1


def test_without_continue_on_error_the_run_stops_at_the_broken_model_leaving_no_partial_output(
    zoo, expected, tmp_path
):
    out = tmp_path / "out"
    done = batch(zoo, out, "--json")
    assert done.returncode == EXIT_INVALID_FORMAT
    data = json.loads(done.stdout)
    assert [r["status"] for r in data["results"]] == ["ok", "ok", "failed", "not run", "not run"]
    names = sorted(expected)
    assert outputs(out) == {n: expected[n] for n in names if n.startswith(("minilm", "gen-a"))}
    assert partials(tmp_path) == []
    assert "2 not run" in done.stderr


def test_skip_existing_skips_what_exists_and_redoes_nothing_else(zoo, expected, tmp_path):
    out = tmp_path / "out"
    good = [p for p in zoo if not p.name.startswith("broken")]
    first = batch(good[:2], out)
    assert first.returncode == 0, first.stderr
    before = {p.name: p.stat().st_mtime_ns for p in out.iterdir()}
    again = batch(good, out, "--skip-existing", "--json")
    assert again.returncode == 0, again.stderr
    data = json.loads(again.stdout)
    assert [r["status"] for r in data["results"]] == ["skipped", "skipped", "ok", "ok"]
    assert {n: (out / n).stat().st_mtime_ns for n in before} == before
    assert outputs(out) == expected


def test_an_existing_output_without_force_or_skip_existing_is_refused_before_any_conversion(
    zoo, tmp_path
):
    out = tmp_path / "out"
    out.mkdir()
    (out / f"gen-b-{TYPE}.safetensors").write_bytes(b"keep me")
    done = batch(zoo[:2] + zoo[3:4], out)
    assert done.returncode == EXIT_VALIDATION
    assert "gen-b-Q8_0.safetensors" in done.stderr and "--skip-existing" in done.stderr
    assert sorted(p.name for p in out.iterdir()) == [f"gen-b-{TYPE}.safetensors"]


@pytest.mark.parametrize(
    ("flags", "code", "message"),
    [
        (["--template", "{stem}.{ext}", "--type", "Q8_0,F16"], EXIT_USAGE, "would both be written"),
        (["--template", "{stem}-{bits}.{ext}"], EXIT_USAGE, "unknown field {bits}"),
        (["--type", "Q9_9"], EXIT_USAGE, "Q9_9"),
        (["--bits", "4", "--type", "Q8_0"], EXIT_USAGE, "--bits 4 contradicts --type Q8_0"),
    ],
)
def test_bad_options_are_usage_errors_before_any_conversion(zoo, tmp_path, flags, code, message):
    out = tmp_path / "out"
    done = run_cli("batch", str(zoo[1]), "-o", str(out), *flags)
    assert done.returncode == code, done.stderr
    assert message in done.stderr and "Traceback" not in done.stderr
    assert not out.exists() or list(out.iterdir()) == []


def test_a_missing_input_is_named_before_any_conversion(zoo, tmp_path):
    out = tmp_path / "out"
    done = run_cli("batch", str(zoo[1]), str(tmp_path / "nope.gguf"), "-o", str(out))
    assert done.returncode == EXIT_NOT_FOUND
    assert "nope.gguf: no such file" in done.stderr
    assert not out.exists()


def test_bits_and_template_name_the_outputs_as_asked(zoo, tmp_path):
    out = tmp_path / "out"
    done = run_cli(
        "batch", str(zoo[1]), str(zoo[3]), "-o", str(out), "--bits", "8", "--per-channel",
        "--template", "{format}/{stem}.{type}.{ext}", "--to", "gguf", "--json",
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert sorted(str(p.relative_to(out)) for p in out.rglob("*.gguf")) == [
        "gguf/gen-a.INT8-CHANNEL.gguf", "gguf/gen-b.INT8-CHANNEL.gguf",
    ]  # fmt: skip
    assert {r["type"] for r in json.loads(done.stdout)["results"]} == {"int8:channel"}
    alone = tmp_path / "alone.gguf"
    bundler.quantize(zoo[1], alone, "int8:channel")
    assert (out / "gguf/gen-a.INT8-CHANNEL.gguf").read_bytes() == alone.read_bytes()


def test_dry_run_prints_every_planned_conversion_with_sizes_and_writes_nothing(
    zoo, expected, tmp_path
):
    out = tmp_path / "out"
    args = ["batch", str(zoo[0]), str(zoo[1]), "-o", str(out), "--type", "Q8_0,F16", "--dry-run"]
    done = run_cli(*args)
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    table = lines[[line.split()[:3] for line in lines].index(["model", "type", "status"]) :]
    assert [row.split()[1:3] for row in table[2:6]] == [
        ["Q8_0", "planned"], ["F16", "planned"], ["Q8_0", "planned"], ["F16", "planned"],
    ]  # fmt: skip
    assert "nothing written" in table[-1]
    data = json.loads(run_cli(*args, "--json").stdout)
    planned = {r["output"].rsplit("/", 1)[1]: r["target_bytes"] for r in data["results"]}
    # the plan's size is the tensor payload: the written file adds only its header
    for name in ("minilm-Q8_0.safetensors", "gen-a-Q8_0.gguf"):
        assert 0 < len(expected[name]) - planned[name] < 64 << 10
    assert not out.exists()


def test_two_jobs_at_once_write_the_same_bytes(zoo, expected, tmp_path):
    out = tmp_path / "out"
    done = batch(zoo, out, "--jobs", "2", "--json", "--continue-on-error")
    assert done.returncode == EXIT_INVALID_FORMAT, done.stderr
    data = json.loads(done.stdout)
    assert data["workers"] == 2
    assert [r["status"] for r in data["results"]] == ["ok", "ok", "failed", "ok", "ok"]
    assert outputs(out) == expected
    assert partials(tmp_path) == []


def test_two_jobs_at_once_stop_at_a_failure_and_finish_what_runs(zoo, expected, tmp_path):
    # a broken model and MiniLM start together; whichever ends first, the next job to start
    # is the second broken one, so after the failures nothing else can start (whatever the
    # timing: the outcome is the same on a loaded machine)
    second = tmp_path / "broken-2.gguf"
    second.write_bytes(zoo[2].read_bytes())
    out = tmp_path / "out"
    done = batch([zoo[2], zoo[0], second, zoo[1], zoo[3]], out, "--jobs", "2", "--json")
    assert done.returncode == EXIT_INVALID_FORMAT, done.stderr
    got = [r["status"] for r in json.loads(done.stdout)["results"]]
    assert got[:2] == ["failed", "ok"] and got[2] in ("failed", "not run")
    assert got[3:] == ["not run", "not run"]
    # what ran besides the failures is complete, and nothing is partial
    assert outputs(out) == {"minilm-Q8_0.safetensors": expected["minilm-Q8_0.safetensors"]}
    assert partials(tmp_path) == []


def test_ray_without_ray_installed_is_a_usage_error_naming_the_extra(zoo, tmp_path):
    blocker = tmp_path / "no-ray" / "ray"
    blocker.mkdir(parents=True)
    (blocker / "__init__.py").write_text("raise ImportError('No module named ray')\n")
    env = dict(os.environ, PYTHONPATH=str(blocker.parent))
    done = run_cli("batch", str(zoo[1]), "-o", str(tmp_path / "out"), "--ray", env=env)
    assert done.returncode == EXIT_USAGE
    assert 'pip install "bundler[ray]"' in done.stderr and "Traceback" not in done.stderr
    assert not (tmp_path / "out").exists()


def test_on_a_terminal_one_progress_bar_goes_over_the_models_on_stderr(zoo, tmp_path):
    import fcntl
    import pty
    import struct
    import subprocess
    import sys
    import termios
    from pathlib import Path

    exe = Path(sys.executable).with_name("bundler")
    cmd = [str(exe)] if exe.exists() else [sys.executable, "-m", "bundler"]
    leader, follower = pty.openpty()
    # a terminal of 24 x 100 characters (a new pseudo-terminal has no size: bars stay empty)
    fcntl.ioctl(follower, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 100, 0, 0))
    args = ["batch", str(zoo[1]), str(zoo[3]), "-o", str(tmp_path / "out"), "--type", "F16"]
    done = subprocess.run([*cmd, *args], stdout=subprocess.PIPE, stderr=follower, text=True)
    os.close(follower)
    bar = b""
    while True:
        try:
            chunk = os.read(leader, 1 << 16)
        except OSError:
            break
        if not chunk:
            break
        bar += chunk
    os.close(leader)
    assert done.returncode == 0
    assert b"batch:" in bar and b"0/2" in bar and b"1/2" in bar and b"model/s" in bar
    assert "[1/2]" not in done.stdout  # the per-model lines are for pipes and files only
    assert " ok " in done.stdout  # the closing table


def test_an_onnx_model_is_rewritten_runnable_as_quantize_rewrites_it(silero_vad_onnx, tmp_path):
    import onnxruntime

    src, out = silero_vad_onnx["silero_vad.onnx"], tmp_path / "out"
    done = run_cli("batch", str(src), "-o", str(out), "--json")  # quantize-rs's default: int8
    assert done.returncode == 0, done.stderr
    [r] = json.loads(done.stdout)["results"]
    assert r["status"] == "ok" and r["source_bytes"] > 3.5 * r["target_bytes"]
    alone = tmp_path / "alone.onnx"
    run_cli("quantize", str(src), "-o", str(alone), "--type", "int8", check=True)
    written = out / "silero_vad-INT8.onnx"
    assert written.read_bytes() == alone.read_bytes()
    onnxruntime.InferenceSession(str(written))  # the graph is whole: ONNX Runtime loads it


def test_an_onnx_model_refuses_a_block_codec_by_name(silero_vad_onnx, tmp_path):
    src = silero_vad_onnx["silero_vad.onnx"]
    done = run_cli("batch", str(src), "-o", str(tmp_path / "out"), "--type", "Q4_K_M")
    assert done.returncode == EXIT_USAGE, done.stderr
    assert "takes an affine codec, not Q4_K_M" in done.stderr
    assert not any((tmp_path / "out").glob("*.onnx"))
