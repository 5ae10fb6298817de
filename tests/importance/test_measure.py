"""`bundler imatrix MODEL --text FILE -o OUT` and `quantize --text`: the importance matrix
measured by running SmolLM2-135M in llama.cpp (llama-cpp-python's eval callback), against
the reference llama-imatrix run on the same model, text, context and chunks."""

from __future__ import annotations

from pathlib import Path

import gguf
import numpy as np
import pytest
from conftest import env_without, run_cli

from bundler.importance import read

CONTEXT, CHUNKS = 128, 4
TEXT_OPTIONS = ("--ctx", str(CONTEXT), "--chunks", str(CHUNKS))


def raw(path: Path) -> tuple[dict[str, tuple[np.ndarray, float]], dict[str, object]]:
    """A GGUF matrix's sums and counts by weight name, and its imatrix.* metadata."""
    reader = gguf.GGUFReader(str(path))
    sums = {t.name[: -len(".in_sum2")]: np.array(t.data, np.float64).ravel()
            for t in reader.tensors if t.name.endswith(".in_sum2")}  # fmt: skip
    counts = {t.name[: -len(".counts")]: float(np.array(t.data).ravel()[0])
              for t in reader.tensors if t.name.endswith(".counts")}  # fmt: skip
    meta = {}
    for key in ("imatrix.chunk_count", "imatrix.chunk_size"):
        meta[key] = int(reader.fields[key].parts[-1][0])
    return {n: (sums[n], counts[n]) for n in sums}, meta


def agreement(mine: Path, theirs: Path) -> dict[str, float]:
    """How closely two matrices' per-column mean squares agree, over every weight."""
    a, b = read(mine).entries, read(theirs).entries
    assert sorted(a) == sorted(b)
    rel = [np.abs(a[n] - b[n]) / np.abs(b[n]) for n in a]
    corr = [np.corrcoef(a[n], b[n])[0, 1] for n in a]
    return {
        "max_rel": float(max(r.max() for r in rel)),
        "median_rel": float(np.median(np.concatenate(rel))),
        "min_corr": float(min(corr)),
    }


@pytest.fixture(scope="module")
def reference_f32_matrix(smollm2_f32_gguf, readme_md, tmp_path_factory) -> Path:
    """llama-imatrix's matrix of the F32 model over README.md, 4 chunks of 128 tokens."""
    from conftest import reference_tool

    from tools.reference import llama_imatrix

    reference_tool(llama_imatrix.binary, "llama-imatrix")
    out = tmp_path_factory.mktemp("ref-imatrix") / "f32.imatrix.gguf"
    llama_imatrix.run(
        "-m", str(smollm2_f32_gguf), "-f", str(readme_md), "-o", str(out),
        "--output-format", "gguf", "-c", str(CONTEXT), "--chunks", str(CHUNKS), "-t", "2",
        "--no-ppl",
    )  # fmt: skip
    return out


def measured(model: Path, text: Path, out: Path) -> Path:
    done = run_cli("imatrix", str(model), "--text", str(text), "-o", str(out), *TEXT_OPTIONS)
    assert done.returncode == 0, done.stderr
    assert f"210 weights measured over {CHUNKS} chunks of {CONTEXT} tokens" in done.stdout
    return out


@pytest.fixture(scope="module")
def f32_matrix(llama_runtime, smollm2_f32_gguf, readme_md, tmp_path_factory) -> Path:
    return measured(smollm2_f32_gguf, readme_md, tmp_path_factory.mktemp("m") / "f32.gguf")


@pytest.mark.oracle_c
@pytest.mark.realfile
def test_measured_statistics_agree_with_llama_imatrix_on_the_f32_model(
    f32_matrix, reference_f32_matrix
):
    mine, mine_meta = raw(f32_matrix)
    theirs, their_meta = raw(reference_f32_matrix)
    assert mine_meta == their_meta == {"imatrix.chunk_count": CHUNKS, "imatrix.chunk_size": 128}
    assert sorted(mine) == sorted(theirs) and len(mine) == 210
    for name, (sums, count) in mine.items():
        assert count == theirs[name][1] == CHUNKS * CONTEXT, name  # every token, every weight
        assert sums.shape == theirs[name][0].shape, name
    found = agreement(f32_matrix, reference_f32_matrix)
    # F32 products: only the order of float additions differs (measured: 2.9e-3, 2.8e-5,
    # 0.99999995)
    assert found["max_rel"] < 1e-2 and found["median_rel"] < 1e-4, found
    assert found["min_corr"] > 0.99999, found


@pytest.mark.oracle_c
@pytest.mark.realfile
def test_on_the_q4_1_model_only_the_runtimes_quantized_kernels_set_them_apart(
    llama_runtime, smollm2_gguf, readme_md, real_imatrix, tmp_path
):
    # the cached reference matrix: SmolLM2's Q4_1 file, README.md, 4 chunks of 128 tokens;
    # llama-imatrix's CPU kernels are built for this machine, llama-cpp-python's are not,
    # and quantized products round differently (measured: 0.114, 2.2e-3, 0.99989)
    mine = measured(smollm2_gguf, readme_md, tmp_path / "q4_1.gguf")
    found = agreement(mine, real_imatrix)
    assert found["median_rel"] < 1e-2 and found["min_corr"] > 0.9995, found


@pytest.mark.slow
@pytest.mark.oracle_c
@pytest.mark.realfile
def test_llama_quantize_and_bundler_read_the_measured_matrix_alike(
    f32_matrix, smollm2_f32_gguf, llama_quantize, tmp_path
):
    from tools.reference.llama_quantize import run

    theirs, ours = tmp_path / "theirs.gguf", tmp_path / "ours.gguf"
    run(smollm2_f32_gguf, theirs, "Q4_K_M", "--imatrix", str(f32_matrix))
    done = run_cli(
        "quantize", str(smollm2_f32_gguf), "-o", str(ours), "--type", "Q4_K_M",
        "--imatrix", str(f32_matrix), "-q",
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    a, b = gguf.GGUFReader(theirs), gguf.GGUFReader(ours)
    assert {k: field_bytes(f) for k, f in a.fields.items() if not k.startswith("GGUF.")} == {
        k: field_bytes(f) for k, f in b.fields.items() if not k.startswith("GGUF.")
    }
    assert "quantize.imatrix.entries_count" in a.fields
    want = {t.name: (t.tensor_type, np.asarray(t.data).view(np.uint8).tobytes()) for t in a.tensors}
    got = {t.name: (t.tensor_type, np.asarray(t.data).view(np.uint8).tobytes()) for t in b.tensors}
    assert got == want


def field_bytes(field) -> bytes:
    return b"".join(np.asarray(p).view(np.uint8).tobytes() for p in field.parts)


@pytest.mark.slow
@pytest.mark.realfile
def test_quantize_text_writes_the_tensors_of_quantize_imatrix_with_the_measured_matrix(
    f32_matrix, smollm2_f32_gguf, readme_md, tmp_path
):
    import bundler

    direct, via_file = tmp_path / "direct.gguf", tmp_path / "via-file.gguf"
    for out, flags in (
        (direct, ["--text", str(readme_md), *TEXT_OPTIONS]),
        (via_file, ["--imatrix", str(f32_matrix)]),
    ):
        done = run_cli(
            "quantize", str(smollm2_f32_gguf), "-o", str(out), "--target-bpw", "5", "-q", *flags
        )
        assert done.returncode == 0, done.stderr
    a, b = bundler.open(direct), bundler.open(via_file)
    assert list(a.tensors) == list(b.tensors)
    for name, t in a.tensors.items():
        assert t.codec == b.tensors[name].codec, name
        assert bytes(t.raw()) == bytes(b.tensors[name].raw()), name
    assert a.metadata["quantize.imatrix.dataset"] == str(readme_md)
    assert a.metadata["quantize.imatrix.entries_count"] == 210
    assert a.metadata["quantize.imatrix.chunks_count"] == CHUNKS


@pytest.mark.realfile
def test_measuring_is_refused_with_a_usage_error_for_what_it_cannot_run(
    llama_runtime, minilm_safetensors, smollm2_f32_gguf, readme_md, tmp_path
):
    cases = [
        (["imatrix", str(minilm_safetensors), "--text", str(readme_md)], 2, "needs a GGUF"),
        (["imatrix", str(smollm2_f32_gguf), "--text", str(tmp_path / "short.txt")], 2,
         "fewer than one chunk"),
        (["imatrix", str(smollm2_f32_gguf), "--text", str(tmp_path / "none.txt")], 3, "none.txt"),
        (["imatrix", str(smollm2_f32_gguf), "--text", str(readme_md), "--ctx", "8"], 2,
         "at least 16"),
    ]  # fmt: skip
    (tmp_path / "short.txt").write_text("Hello there.\n")
    for args, code, message in cases:
        done = run_cli(*args, "-o", str(tmp_path / "m.gguf"))
        assert done.returncode == code, (args, done.stderr)
        assert message in done.stderr and "Traceback" not in done.stderr, done.stderr
        assert not (tmp_path / "m.gguf").exists()


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--text", "t.txt", "--imatrix", "m.gguf"], "not both"),
        (["--ctx", "128"], "go(es) with --text"),
        (["--chunks", "2", "--llama-threads", "1"], "--chunks, --llama-threads go(es) with --text"),
    ],
)
def test_quantize_text_options_are_checked(smollm2_f32_gguf, tmp_path, flags, message):
    out = tmp_path / "out.gguf"
    done = run_cli("quantize", str(smollm2_f32_gguf), "-o", str(out), "--type", "q8_0", *flags)
    assert done.returncode == 2, done.stderr
    assert message in done.stderr and not out.exists()


def test_an_existing_output_is_kept_without_force(smollm2_f32_gguf, readme_md, tmp_path):
    out = tmp_path / "m.gguf"
    out.write_bytes(b"mine")
    done = run_cli("imatrix", str(smollm2_f32_gguf), "--text", str(readme_md), "-o", str(out))
    assert done.returncode == 5 and out.read_bytes() == b"mine"


def test_without_the_llama_extra_it_is_a_usage_error_naming_it(
    smollm2_f32_gguf, readme_md, tmp_path
):
    env = env_without(tmp_path, "llama_cpp")
    out = tmp_path / "m.gguf"
    done = run_cli(
        "imatrix", str(smollm2_f32_gguf), "--text", str(readme_md), "-o", str(out), env=env
    )
    assert done.returncode == 2, done.stderr
    assert "pip install 'bundler[llama]'" in done.stderr and "Traceback" not in done.stderr
    assert not out.exists()
