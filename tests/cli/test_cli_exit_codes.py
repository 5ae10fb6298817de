"""Exit codes and messages of every command that reads a model, for the inputs people get
wrong: a missing file (3), files that are not models (4, saying what they look like), a
truncated model (4), and an existing output without --force (5). Never a traceback."""

from __future__ import annotations

import pytest
from conftest import run_cli

#: argv of each command with IN standing for the input file (diff reads it as either side).
COMMANDS = {
    "inspect": ["inspect", "IN"],
    "validate": ["validate", "IN"],
    "quantize": ["quantize", "IN", "-o", "OUT", "--type", "q8_0"],
    "convert": ["convert", "IN", "-o", "OUT"],
    "diff": ["diff", "IN", "GOOD"],
}

NOT_MODELS = {
    "html": (
        b"<!DOCTYPE html>\n<html><head><title>404 Not Found</title></head></html>\n",
        "it is an HTML page",
    ),
    "empty": (b"", "the file is empty"),
    "lfs": (
        b"version https://git-lfs.github.com/spec/v1\n"
        b"oid sha256:b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53\n"
        b"size 98362432\n",
        "git-lfs pointer",
    ),
}


def _run(command: str, path, tmp_path, good) -> tuple[int, str]:
    argv = [
        {"IN": str(path), "OUT": str(tmp_path / "out.gguf"), "GOOD": str(good)}.get(a, a)
        for a in COMMANDS[command]
    ]
    done = run_cli(*argv)
    assert "Traceback" not in done.stderr and "Traceback" not in done.stdout
    return done.returncode, done.stderr


@pytest.mark.parametrize("command", COMMANDS)
def test_a_missing_file_exits_3(command, tmp_path, smollm2_gguf):
    missing = tmp_path / "nowhere.gguf"
    code, err = _run(command, missing, tmp_path, smollm2_gguf)
    assert code == 3
    assert err.strip() == f"bundler: error: {missing}: no such file"


#: Every kind through the two reporting commands, one kind through the others (they share
#: the detection that words the message).
NOT_MODEL_CASES = [(c, k) for c in ("inspect", "validate") for k in NOT_MODELS] + [
    (c, "lfs") for c in ("quantize", "convert", "diff")
]
TRUNCATED_CASES = [(c, "header") for c in COMMANDS] + [("inspect", "data"), ("validate", "data")]


@pytest.mark.parametrize(("command", "kind"), NOT_MODEL_CASES)
def test_a_file_that_is_not_a_model_exits_4_saying_what_it_looks_like(
    command, kind, tmp_path, smollm2_gguf
):
    content, says = NOT_MODELS[kind]
    path = tmp_path / "model.gguf"
    path.write_bytes(content)
    code, err = _run(command, path, tmp_path, smollm2_gguf)
    assert code == 4
    assert err.startswith(
        f"bundler: error: {path} at byte 0: not a GGUF, SafeTensors, APR or ONNX file"
    )
    assert says in err


@pytest.fixture(scope="module")
def truncated(smollm2_gguf, tmp_path_factory):
    """SmolLM2 cut inside its tensor infos, and cut inside its tensor data."""
    data = smollm2_gguf.read_bytes()
    out = tmp_path_factory.mktemp("truncated")
    paths = {}
    for where, size in (("header", 1000), ("data", len(data) // 2)):
        paths[where] = out / f"cut-in-{where}.gguf"
        paths[where].write_bytes(data[:size])
    return paths


@pytest.mark.parametrize(("command", "where"), TRUNCATED_CASES)
def test_a_truncated_model_exits_4_saying_where_the_file_ends(
    command, where, truncated, tmp_path, smollm2_gguf
):
    code, err = _run(command, truncated[where], tmp_path, smollm2_gguf)
    assert code == 4
    assert err.startswith(f"bundler: error: {truncated[where]} at byte ")
    if where == "header":
        assert "tensor_count 272 cannot be right" in err and "976 are left in the file" in err
    else:
        half = smollm2_gguf.stat().st_size // 2
        assert "truncated: tensor 'blk." in err and f"but the file ends at {half:,}" in err


@pytest.mark.parametrize("command", ["quantize", "convert"])
def test_an_existing_output_without_force_exits_5_and_is_left_alone(
    command, tmp_path, minilm_safetensors
):
    out = tmp_path / "out.gguf"
    out.write_bytes(b"keep me")
    argv = [a.replace("IN", str(minilm_safetensors)) for a in COMMANDS[command]]
    done = run_cli(*[str(out) if a == "OUT" else a for a in argv])
    assert done.returncode == 5 and "Traceback" not in done.stderr
    assert (
        done.stderr.strip() == f"bundler: error: {out}: already exists (use --force to overwrite)"
    )
    assert out.read_bytes() == b"keep me"
