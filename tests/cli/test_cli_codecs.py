"""The codec commands through the installed `bundler` executable."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from conftest import run_cli

from bundler.codecs import TABLE, get
from bundler.plan import FILE_TYPES


def test_types_lists_every_codec_and_the_affine_family_as_json():
    done = run_cli("types", "--json", check=True)
    rows = json.loads(done.stdout)
    affine = ["int2", "int3", "int4", "int8", "int16"]
    assert [r["name"] for r in rows] == [f.name for f in TABLE] + affine
    int4 = next(r for r in rows if r["name"] == "int4")
    assert (int4["bits_per_weight"], int4["safetensors_dtype"], int4["encode"]) == (4, "I32", True)
    q4 = next(r for r in rows if r["name"] == "q4_0")
    assert (q4["ggml_id"], q4["apr_code"], q4["block_size"], q4["type_size"]) == (2, 66, 32, 18)
    assert q4["bits_per_weight"] == 4.5 and q4["apr_native"] is False
    importance = {r["name"]: r["importance"] for r in rows}
    assert importance["q4_0"] == importance["q4_k"] == "takes"
    assert importance["q8_0"] == importance["f16"] == "ignores"
    assert importance["q8_1"] is None and importance["int4"] is None
    # ggml quantizes IQ2_XXS and IQ2_XS only with an importance matrix, IQ2_S with or without
    assert importance["iq2_xxs"] == importance["iq2_xs"] == "requires"
    assert importance["iq2_s"] == "takes"


def test_types_prints_a_table_for_people():
    out = run_cli("types", check=True).stdout
    assert out.splitlines()[0].split()[:4] == ["name", "ggml", "apr", "safetensors"]
    assert any(line.startswith("q8_0 ") for line in out.splitlines())
    q4_k = next(line.split() for line in out.splitlines() if line.startswith("q4_k "))
    assert "weighted" in q4_k and "importance matrix" in out


def test_types_file_types_lists_each_file_type_with_what_it_needs_as_json():
    rows = json.loads(run_cli("types", "--file-types", "--json", check=True).stdout)
    by = {r["name"]: r for r in rows}
    assert sorted(by) == sorted(f.name for f in FILE_TYPES)
    assert [r["file_type"] for r in rows] == sorted(f.ftype for f in FILE_TYPES)
    assert (by["IQ2_M"]["file_type"], by["IQ2_M"]["base"], by["IQ2_S"]["base"]) == (
        29, "iq2_s", "iq2_xs"
    )  # fmt: skip
    assert by["Q4_K_M"]["alias"] == "Q4_K" and by["Q2_K_S"]["alias"] is None
    # llama-quantize's refusals on a llama of 256-wide rows (compared with it by the oracle)
    assert {n for n, r in by.items() if r["needs_imatrix"]} == {
        "IQ1_S", "IQ1_M", "IQ2_XXS", "IQ2_XS", "IQ2_S", "IQ2_M", "Q2_K_S", "IQ3_XXS", "IQ3_XS"
    }  # fmt: skip
    pending = {c for r in rows for c in r["needs_encoders"]}
    assert all(not get(c).facts.has_kernels for c in pending)
    assert by["Q2_K_S"]["needs_encoders"] == by["Q4_K_M"]["needs_encoders"] == []


def test_unknown_command_is_a_usage_error_with_exit_code_2():
    done = run_cli("frobnicate")
    assert done.returncode == 2 and "invalid choice" in done.stderr


def _modules_after(code: str) -> set[str]:
    out = subprocess.run(
        [sys.executable, "-c", code + "\nimport sys; print(' '.join(sorted(sys.modules)))"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    return set(out.split())


def test_commands_that_do_not_encode_import_no_compiler():
    for argv in (["types"], ["types", "--file-types"], ["--help"], ["bench", "--help"]):
        code = (
            f"from bundler.cli import main\ntry:\n    main({argv!r})\nexcept SystemExit:\n    pass"
        )
        loaded = _modules_after(code)
        assert "numba" not in loaded and "llvmlite" not in loaded, argv


def test_looking_codecs_up_imports_no_compiler():
    loaded = _modules_after("import bundler; bundler.codec('q4_0').facts.nbytes((4, 64))")
    assert "numba" not in loaded


def test_compiled_kernels_are_loaded_from_the_disk_cache_on_a_second_run():
    code = "import numpy as np, bundler; bundler.encode(np.ones((2, 64), np.float32), 'q4_0')"
    # numba's own cache (native entries, which skip it, off: tests/codecs/test_native.py)
    env = dict(os.environ, NUMBA_DEBUG_CACHE="1", BUNDLER_NATIVE_KERNELS="0")
    for _ in range(2):  # the first run may have to compile and save
        done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env)
    assert done.returncode == 0, done.stderr
    assert "data loaded from" in done.stdout and "data saved to" not in done.stdout


def test_bench_codecs_reports_ratios_against_gguf_as_json():
    done = run_cli(
        "bench",
        "codecs",
        "--codecs",
        "q4_0,q8_0",
        "--rows",
        "64",
        "--cols",
        "1024",
        "--threads",
        "1",
        "--repeat",
        "1",
        "--json",
        check=True,
    )
    report = json.loads(done.stdout)
    assert report["input"] == {"rows": 64, "cols": 1024, "std": 0.02, "seed": 20260101}
    rows = {r["codec"]: r for r in report["results"]}
    assert set(rows) == {"q4_0", "q8_0"}
    for row in rows.values():
        assert row["gguf_exact"] is True
        assert row["ours_encode_mib_s"] > 0 and row["gguf_encode_mib_s"] > 0
        assert row["ratio_encode_vs_gguf"] == row["ours_encode_mib_s"] / row["gguf_encode_mib_s"]
        assert row["output_bytes"] == 64 * 1024 // 32 * (18 if row["codec"] == "q4_0" else 34)


def test_bench_codecs_leaves_blank_what_a_reference_lacks_instead_of_failing():
    # the gguf package encodes neither Q8_1 nor Q2_K; the C library has no Q8_1 decoder
    root = Path(__file__).resolve().parents[2]
    done = run_cli("bench", "codecs", "--codecs", "q8_1,q2_k", "--rows", "8", "--cols", "256",
                   "--threads", "1", "--repeat", "1", "--json",
                   env={**os.environ, "PYTHONPATH": str(root)})  # fmt: skip
    assert done.returncode == 0, done.stderr
    rows = {r["codec"]: r for r in json.loads(done.stdout)["results"]}
    assert rows["q8_1"]["gguf_encode_mib_s"] is None and rows["q8_1"]["gguf_decode_mib_s"] is None
    assert rows["q2_k"]["gguf_encode_mib_s"] is None and rows["q2_k"]["gguf_decode_mib_s"] > 0
    assert rows["q8_1"]["c_decode_mib_s"] is None
    if rows["q8_1"]["c_exact"] is not None:  # the C library is built (always in CI)
        assert rows["q8_1"]["c_exact"] is True and rows["q2_k"]["c_exact"] is True


def test_bench_codecs_measures_aprenders_codecs_beside_no_c_library():
    # flat codecs (decoding needs the shape) that are no GGML type (the C library has none)
    root = Path(__file__).resolve().parents[2]
    done = run_cli("bench", "codecs", "--codecs", "apr_q4,apr_q8", "--rows", "8", "--cols",
                   "256", "--threads", "1", "--repeat", "1", "--json",
                   env={**os.environ, "PYTHONPATH": str(root)})  # fmt: skip
    assert done.returncode == 0, done.stderr
    rows = json.loads(done.stdout)["results"]
    assert [r["codec"] for r in rows] == ["apr_q4", "apr_q8"]
    assert all(r["ours_encode_mib_s"] > 0 and r["ours_decode_mib_s"] > 0 for r in rows)
    assert all(r["c_encode_mib_s"] is None and r["c_decode_mib_s"] is None for r in rows)


def _weighted_bench(codecs: str, rows: int, cols: int, json_out: bool = True):
    """`bundler bench codecs --weighted` on one thread, the C oracle importable."""
    root = Path(__file__).resolve().parents[2]  # the C oracle (tools.reference) lives there
    env = {**os.environ, "PYTHONPATH": str(root)}
    args = ("--codecs", codecs, "--rows", str(rows), "--cols", str(cols), "--threads", "1")
    done = run_cli("bench", "codecs", *args, "--repeat", "1", "--weighted",
                   *(["--json"] if json_out else []), env=env)  # fmt: skip
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout) if json_out else done.stdout


def test_bench_codecs_weighted_adds_the_weighted_encoders_beside_the_c_library():
    report = _weighted_bench("q4_0,q8_0", 16, 512)
    assert report["importance"] == {"distribution": "lognormal(0, 2)", "seed": 20260102}
    rows = {(r["codec"], r["weighted"]): r for r in report["results"]}
    # Q8_0 ignores importance weights: no weighted row for it
    assert set(rows) == {("q4_0", False), ("q8_0", False), ("q4_0", True)}
    weighted = rows["q4_0", True]
    assert weighted["ours_encode_mib_s"] > 0 and weighted["output_bytes"] == 16 * 512 // 32 * 18
    assert weighted["gguf_encode_mib_s"] is None and weighted["ours_decode_mib_s"] is None
    if weighted["c_exact"] is not None:  # the C library is built (always in CI)
        assert weighted["c_exact"] is True
        assert weighted["ratio_encode_vs_c_1_thread"] == (
            weighted["ours_encode_mib_s"] / weighted["c_encode_mib_s"]
        )
    assert "q4_0 +imatrix" in _weighted_bench("q4_0,q8_0", 16, 512, json_out=False)


def test_bench_codecs_measures_the_lattice_encoders_beside_the_c_library():
    report = _weighted_bench("iq3_s,iq1_s", 8, 512)
    rows = {(r["codec"], r["weighted"]): r for r in report["results"]}
    # IQ1_S is quantized only with an importance matrix: its one row is the weighted one
    assert set(rows) == {("iq3_s", False), ("iq3_s", True), ("iq1_s", True)}
    assert rows["iq3_s", False]["gguf_encode_mib_s"] is None  # the gguf package only decodes
    for row in rows.values():
        assert row["ours_encode_mib_s"] > 0
        if row["c_exact"] is not None:  # the C library is built (always in CI)
            assert row["c_exact"] is True and row["ratio_encode_vs_c_1_thread"] > 0


def test_bench_codecs_measures_the_newest_ggml_types_where_the_gguf_package_cannot():
    # the gguf package (0.19.0) only decodes NVFP4, and has neither Q1_0 nor Q2_0
    report = _weighted_bench("nvfp4,q1_0,q2_0", 8, 512)
    rows = {r["codec"]: r for r in report["results"]}
    assert set(rows) == {"nvfp4", "q1_0", "q2_0"} and not any(r["weighted"] for r in rows.values())
    assert rows["nvfp4"]["gguf_encode_mib_s"] is None and rows["nvfp4"]["gguf_decode_mib_s"] > 0
    for name in ("q1_0", "q2_0"):
        assert rows[name]["gguf_encode_mib_s"] is None and rows[name]["gguf_decode_mib_s"] is None
    for row in rows.values():
        assert row["ours_encode_mib_s"] > 0 and row["ours_decode_mib_s"] > 0
        if row["c_exact"] is not None:  # the C library is built (always in CI)
            assert row["c_exact"] is True
