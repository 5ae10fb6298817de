"""`bundler vectors quantize` and `bundler vectors eval` in a real subprocess: outputs that
read back exactly, reports with --json, and typed errors with exit codes, no tracebacks."""

from __future__ import annotations

import json

import numpy as np
import pytest
from conftest import run_cli

import bundler
from bundler import vectors

X = np.random.default_rng(17).standard_normal((300, 48)).astype(np.float32)


@pytest.fixture
def npy(tmp_path):
    path = tmp_path / "emb.npy"
    np.save(path, X)
    return path


@pytest.mark.parametrize(
    ("scheme", "ext"),
    [("qint8", "safetensors"), ("qint4", "gguf"), ("binary", "apr"), ("fp16", "bvq")],
)
def test_quantize_writes_exactly_what_the_library_computes(npy, tmp_path, scheme, ext):
    out = tmp_path / f"q.{ext}"
    done = run_cli("vectors", "quantize", str(npy), "-o", str(out), "--scheme", scheme, "--json")
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    want = vectors.quantize(X, scheme)
    if ext == "bvq":
        got = vectors.from_bytes(out.read_bytes())
    else:
        got = vectors.from_bundle(bundler.open(out), "vectors")
    assert got.data.tobytes() == want.data.tobytes()
    assert got.scale.tobytes() == want.scale.tobytes() and got.min.tobytes() == want.min.tobytes()
    assert report["scheme"] == scheme and report["vectors"] == 300 and report["dim"] == 48
    assert report["stored_bytes"] == want.stored_size()
    assert report["output_bytes"] == out.stat().st_size
    assert list(report) == sorted(report)


@pytest.mark.parametrize("scheme", ["qint8", "qint4"])
def test_quantize_with_dimension_ranges_writes_what_the_library_computes(npy, tmp_path, scheme):
    out = tmp_path / "d.safetensors"
    done = run_cli(
        "vectors", "quantize", str(npy), "-o", str(out), "--scheme", scheme,
        "--ranges", "dimension", "--json",
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    want = vectors.quantize_dims(X, scheme)
    got = vectors.from_bundle(bundler.open(out), "vectors")
    assert isinstance(got, vectors.DimensionVectors)
    assert got.data.tobytes() == want.data.tobytes()
    assert got.ranges.scale.tobytes() == want.ranges.scale.tobytes()
    assert got.ranges.min.tobytes() == want.ranges.min.tobytes()
    assert report["ranges"] == "dimension" and report["stored_bytes"] == want.stored_size()
    human = run_cli(
        "vectors", "quantize", str(npy), "-o", str(out), "--scheme", scheme,
        "--ranges", "dimension", "--force",
    )  # fmt: skip
    assert human.returncode == 0 and "per-dimension ranges" in human.stdout


def test_auto_meets_the_target_cosine_and_reports_the_mix(npy, tmp_path):
    out = tmp_path / "auto.gguf"
    done = run_cli(
        "vectors", "quantize", str(npy), "-o", str(out), "--scheme", "auto",
        "--target-cosine", "0.995", "--json",
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    assert sum(report["mix"].values()) == 300 and report["min_cosine"] >= 0.995
    mixed = vectors.from_bundle(bundler.open(out))
    assert (vectors.cosine(X, mixed.dequantize()) >= 0.995).all()
    assert report["bytes_saved"] == X.nbytes - mixed.stored_size()


def test_human_output_names_scheme_sizes_and_cosine(npy, tmp_path):
    done = run_cli(
        "vectors", "quantize", str(npy), "-o", str(tmp_path / "o.bvq"), "--scheme", "qint4"
    )
    assert done.returncode == 0 and "qint4" in done.stdout and "cosine mean" in done.stdout


def test_eval_reports_every_scheme(npy):
    done = run_cli("vectors", "eval", str(npy), "--queries", "20", "--json")
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    assert [r["scheme"] for r in report["schemes"]] == ["qint8", "qint4", "binary", "fp16"]
    by = {r["scheme"]: r for r in report["schemes"]}
    assert by["fp16"]["recall_at_k"] >= by["qint8"]["recall_at_k"] >= by["binary"]["recall_at_k"]
    assert by["binary"]["stored_bytes"] == 300 * (6 + 8)
    assert all(0 < r["min_cosine"] <= r["mean_cosine"] <= 1 for r in report["schemes"])
    human = run_cli("vectors", "eval", str(npy), "--queries", "20", "--schemes", "qint8,binary")
    assert human.returncode == 0 and "recall@10" in human.stdout and "fp16" not in human.stdout


def test_eval_reports_dimension_ranges_beside_per_vector_ones(npy):
    done = run_cli(
        "vectors", "eval", str(npy), "--queries", "20", "--schemes", "qint4,qint4-dims", "--json"
    )
    assert done.returncode == 0, done.stderr
    by = {r["scheme"]: r for r in json.loads(done.stdout)["schemes"]}
    assert by["qint4-dims"]["stored_bytes"] == 300 * 24 + 8 * 48
    assert by["qint4"]["stored_bytes"] == 300 * (24 + 8)
    assert 0 < by["qint4-dims"]["recall_at_k"] <= 1


@pytest.mark.realfile
def test_quantize_and_eval_a_real_bundle_tensor(minilm_safetensors, tmp_path):
    out = tmp_path / "minilm_q8.gguf"
    name = "embeddings.word_embeddings.weight"
    done = run_cli(
        "vectors", "quantize", str(minilm_safetensors), "--tensor", name, "-o", str(out),
        "--scheme", "qint8", "--json",
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    q = vectors.from_bundle(bundler.open(out), name)
    assert (len(q), q.dim) == (30522, 384)
    assert json.loads(done.stdout)["mean_cosine"] > 0.999
    done = run_cli(
        "vectors", "eval", str(minilm_safetensors), "--tensor", name, "--schemes", "qint8,binary",
        "--queries", "20", "--json",
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    rows = {r["scheme"]: r for r in json.loads(done.stdout)["schemes"]}
    assert (
        rows["qint8"]["recall_at_k"] > 0.95
        and 0.2 < rows["binary"]["recall_at_k"] < rows["qint8"]["recall_at_k"]
    )


#: id: (arguments with {d} for the test's directory, exit code, text of the message)
BAD = {
    "missing": ("quantize {d}/missing.npy -o {d}/o.gguf --scheme qint8", 3, "no such file"),
    "nan": ("quantize {d}/nan.npy -o {d}/o.gguf --scheme qint8", 2, "vector 123: value 7 is nan"),
    "same_path": ("quantize {d}/emb.npy -o {d}/emb.npy --scheme fp16", 2, "is the input"),
    "unknown_extension": (
        "quantize {d}/emb.npy -o {d}/o.txt --scheme fp16", 2, "cannot tell the format",
    ),
    "bad_scheme": ("quantize {d}/emb.npy -o {d}/o.gguf --scheme int3", 2, "invalid choice"),
    "bad_target": (
        "quantize {d}/emb.npy -o {d}/o.gguf --scheme auto --target-cosine 1.5", 2, "(0, 1]",
    ),
    "not_an_array": ("quantize {d}/junk.npy -o {d}/o.gguf --scheme qint8", 4, "junk.npy"),
    "eval_bad_scheme": ("eval {d}/emb.npy --schemes qint8,q2", 2, "unknown vector scheme 'q2'"),
    # the output is checked before the input is read: these name the output, not the NaN
    "unknown_extension_first": (
        "quantize {d}/nan.npy -o {d}/o.txt --scheme fp16", 2, "cannot tell the format",
    ),
    "dims_to_wire": (
        "quantize {d}/emb.npy -o {d}/o.bvq --scheme qint8 --ranges dimension", 2,
        "write per-dimension ranges to a bundle",
    ),
    "dims_binary": (
        "quantize {d}/emb.npy -o {d}/o.gguf --scheme binary --ranges dimension", 2,
        "applies to qint8 and qint4",
    ),
    "auto_to_wire_first": (
        "quantize {d}/nan.npy -o {d}/o.bvq --scheme auto", 2, "the wire format holds one scheme",
    ),
}  # fmt: skip


@pytest.mark.parametrize("case", sorted(BAD))
def test_bad_input_is_a_one_line_error_with_its_exit_code(npy, tmp_path, case):
    (tmp_path / "junk.npy").write_bytes(b"this is not an array")
    bad = X.copy()
    bad[123, 7] = np.nan
    np.save(tmp_path / "nan.npy", bad)
    args, code, message = BAD[case]
    done = run_cli("vectors", *args.format(d=tmp_path).split())
    assert done.returncode == code, done.stderr
    assert message in done.stderr and "Traceback" not in done.stderr
    assert not (tmp_path / "o.gguf").exists()


def test_an_existing_output_needs_force(npy, tmp_path):
    out = tmp_path / "o.safetensors"
    out.write_bytes(b"keep")
    args = ["vectors", "quantize", str(npy), "-o", str(out), "--scheme", "qint8"]
    done = run_cli(*args)
    assert done.returncode == 5 and out.read_bytes() == b"keep"
    assert run_cli(*args, "--force").returncode == 0 and out.read_bytes() != b"keep"


def test_a_bundle_input_needs_the_tensor_named(npy, tmp_path):
    src = tmp_path / "m.safetensors"
    bundler.Bundle(tensors=[bundler.Tensor.from_array("emb", X)]).save(src)
    done = run_cli(
        "vectors", "quantize", str(src), "-o", str(tmp_path / "o.gguf"), "--scheme", "qint8"
    )
    assert done.returncode == 2 and "--tensor" in done.stderr and "'emb'" in done.stderr
    done = run_cli(
        "vectors", "quantize", str(src), "--tensor", "emb", "-o", str(tmp_path / "o.gguf"),
        "--scheme", "binary",
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
