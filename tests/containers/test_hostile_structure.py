"""Structural lies in every format (issue 18, one test per class): each is a typed error
naming the file, offset and problem in the reader, `validate` and `convert`, or a correct
read when the file is valid."""

from __future__ import annotations

import json
import os
import struct
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import bundler
from bundler.bench import hostile
from bundler.bundle import Bundle, Metadata, Tensor, Value, ValueType
from bundler.containers import typed_json
from bundler.containers.gguf import format as gguf_format
from bundler.containers.limits import MAX_NESTED_ARRAYS
from bundler.errors import FormatError, TruncatedError, UsageError
from tests.conftest import run_cli
from tests.containers.apr_samples import RawApr, RawEntry
from tests.containers.gguf_hostile import Info, Raw, kv

CONFORMANCE = Path(__file__).parents[2] / "formats" / "conformance"


def _safetensors(header: dict, data: bytes = b"") -> bytes:
    raw = json.dumps(header, separators=(",", ":")).encode()
    return struct.pack("<Q", len(raw)) + raw + data


def _apr(dims: list[int], dtype: int = 0, metadata: bytes | None = None) -> bytes:
    entries = [RawEntry(b"a", dtype, dims, 0, 0)] if dims is not None else []
    raw = RawApr(entries=entries, payloads=[b""] if entries else [])
    if metadata is not None:
        raw.metadata = metadata
    return raw.build()


def _write(tmp_path: Path, name: str, data: bytes) -> Path:
    path = tmp_path / name
    path.write_bytes(data)
    return path


def _refused(path: Path, phrase: str) -> FormatError:
    with pytest.raises(FormatError) as info:
        bundler.open(path)
    err = info.value
    assert err.path == str(path) and err.offset is not None
    assert phrase in err.problem, err.problem
    return err


def _cli_refuses(path: Path, tmp_path: Path, to: str) -> None:
    """validate says invalid (never exit 0); convert writes nothing; no traceback."""
    v = run_cli("validate", str(path), "--strict")
    assert v.returncode in (4, 5), v.stdout + v.stderr
    out = tmp_path / f"out.{to}"
    c = run_cli("convert", str(path), "-o", str(out))
    assert c.returncode == 4, c.stdout + c.stderr
    assert "Traceback" not in v.stderr + c.stderr
    assert not out.exists()


# ------------------------------------------------------------------------ 1. zero bytes, huge dim

ZERO_BYTES_HUGE_DIM = {
    "gguf [0, 2^62]": ("gguf", Raw(infos=[Info("a", [0, 2**62])]).build()),
    "safetensors [2^62, 0]": (
        "safetensors",
        _safetensors({"a": {"dtype": "F32", "shape": [2**62, 0], "data_offsets": [0, 0]}}),
    ),
    "apr f32 [2^62, 0]": ("apr", _apr([2**62, 0], 0)),
    "apr q4 [2^62, 0]": ("apr", _apr([2**62, 0], 128)),
    "apr q8 [2^62, 0]": ("apr", _apr([2**62, 0], 129)),
}


@pytest.mark.parametrize("case", ZERO_BYTES_HUGE_DIM, ids=str)
def test_zero_byte_tensor_with_a_huge_dimension_is_refused_everywhere(tmp_path, case):
    fmt, data = ZERO_BYTES_HUGE_DIM[case]
    path = _write(tmp_path, f"in.{fmt}", data)
    _refused(path, "cannot be materialized")
    _cli_refuses(path, tmp_path, "gguf" if fmt != "gguf" else "safetensors")


def test_an_onnx_zero_byte_tensor_with_a_huge_dimension_is_refused_everywhere(tmp_path):
    import onnx
    from onnx import TensorProto, helper

    huge = helper.make_tensor("a", TensorProto.FLOAT, [0, 2**62, 16], b"", raw=True)
    graph = helper.make_graph([], "g", [], [], initializer=[huge])
    path = tmp_path / "in.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), path)
    with pytest.raises(FormatError, match=r"tensor 'a': .*cannot be materialized") as info:
        bundler.open(path)
    assert info.value.path == str(path)
    _cli_refuses(path, tmp_path, "safetensors")


# ------------------------------------------------------------------------ 2. dimension limits


@pytest.mark.parametrize(
    ("fmt", "ndim", "data"),
    [
        ("safetensors", 65, None),
        ("safetensors", 33, None),
        ("gguf", 33, Raw(infos=[Info("a", [1] * 33)]).build()),
        ("apr", 9, _apr([1] * 9)),
    ],
)
def test_more_dimensions_than_the_stated_limit_is_a_format_error(tmp_path, fmt, ndim, data):
    if data is None:
        entry = {"dtype": "F32", "shape": [1] * ndim, "data_offsets": [0, 4]}
        data = _safetensors({"a": entry}, b"\0" * 4)
    path = _write(tmp_path, f"in.{fmt}", data)
    with pytest.raises(FormatError) as info:
        bundler.open(path)
    assert "dimensions" in info.value.problem or "n_dims" in str(info.value)


def test_safetensors_tensor_at_the_dimension_limit_reads_and_materializes(tmp_path):
    entry = {"dtype": "F32", "shape": [1] * 32, "data_offsets": [0, 4]}
    path = _write(tmp_path, "ok.safetensors", _safetensors({"a": entry}, b"\0\0\x80\x3f"))
    a = bundler.open(path).tensors["a"].numpy()
    assert a.shape == (1,) * 32 and a.reshape(-1)[0] == 1.0


# ------------------------------------------------------------------------ 3. non-string dtype


@pytest.mark.parametrize("dtype", [["F32"], {"F32": 1}, 32, None])
def test_safetensors_dtype_that_is_not_a_string_is_a_format_error(tmp_path, dtype):
    header = {"a": {"dtype": dtype, "shape": [1], "data_offsets": [0, 4]}}
    path = _write(tmp_path, "in.safetensors", _safetensors(header, b"\0" * 4))
    _refused(path, "unknown dtype")
    for cmd in (["inspect", str(path)], ["validate", str(path)]):
        done = run_cli(*cmd)
        assert done.returncode in (4, 5) and "Traceback" not in done.stderr, done.stderr


# ------------------------------------------------------------------------ 4. empty nested entry

EMPTY_NESTED = [["k", "ARRAY", "ARRAY", [[]]]]


def _typed_files(entries: list) -> dict[str, bytes]:
    """The typed-metadata conformance file with its metadata replaced, in both formats."""
    seed = (CONFORMANCE / "safetensors" / "typed_q4_0.safetensors").read_bytes()
    n = int.from_bytes(seed[:8], "little")
    header = json.loads(seed[8 : 8 + n])
    header["__metadata__"]["bundler.metadata"] = json.dumps(entries)
    apr = json.dumps({"model_type": "custom", "bundler.metadata": entries}).encode()
    return {"safetensors": _safetensors(header, seed[8 + n :]), "apr": _apr(None, metadata=apr)}


@pytest.mark.parametrize("fmt", ["safetensors", "apr"])
def test_empty_nested_typed_metadata_entry_is_a_format_error(tmp_path, fmt):
    path = _write(tmp_path, f"in.{fmt}", _typed_files(EMPTY_NESTED)[fmt])
    _refused(path, "typed metadata")
    done = run_cli("inspect", str(path))
    assert done.returncode == 4 and "Traceback" not in done.stderr, done.stderr


# ------------------------------------------------------------------------ 5. non-UTF-8 names


def test_non_utf8_key_and_tensor_name_print_escaped_on_a_strict_stdout(tmp_path):
    data = Raw(
        kvs=[kv(b"bad.\xff\xfekey", 4, struct.pack("<I", 7))],
        infos=[Info(b"w\xff", [32])],
        data=bytes(128),
    ).build()
    path = _write(tmp_path, "in.gguf", data)
    env = {**os.environ, "PYTHONIOENCODING": "utf-8"}
    done = run_cli("inspect", str(path), env=env)
    assert done.returncode == 0, done.stderr
    assert "\\udcff" in done.stdout or "\\xff" in done.stdout
    out = tmp_path / "out.gguf"
    done = run_cli("quantize", str(path), "-o", str(out), "--type", "q8_0", env=env)
    assert "Traceback" not in done.stderr, done.stderr
    assert done.returncode == 0, done.stderr


# ------------------------------------------------------------------------ 6. sharded inspect


def test_inspect_of_a_sharded_checkpoint_prints_its_table():
    for target in ("sharded", "sharded/model.safetensors.index.json"):
        done = run_cli("inspect", str(CONFORMANCE / "safetensors" / target))
        assert done.returncode == 0, done.stderr
        assert "SafeTensors, sharded" in done.stdout


# ------------------------------------------------------------------------ 7. corrupt outputs


@pytest.mark.parametrize("fmt", ["safetensors", "apr"])
def test_two_dimensional_typed_array_is_refused_not_written_with_a_wrong_count(tmp_path, fmt):
    entries = [["k", "ARRAY", "INT32", [[1, 2], [3, 4]]], ["next", "UINT32", 5]]
    path = _write(tmp_path, f"in.{fmt}", _typed_files(entries)[fmt])
    _refused(path, "INT32")
    out = tmp_path / "out.gguf"
    assert run_cli("convert", str(path), "-o", str(out)).returncode == 4
    assert not out.exists()


def test_gguf_writer_refuses_a_two_dimensional_numeric_array(tmp_path):
    md = Metadata()
    md["k"] = Value(ValueType.ARRAY, np.array([[1, 2], [3, 4]], np.int32), ValueType.INT32)
    out = tmp_path / "out.gguf"
    with pytest.raises(UsageError, match="not 1-D"):
        gguf_format.write(Bundle(md, []), out)
    assert not out.exists()


def test_safetensors_shape_2_63_never_becomes_a_gguf_with_a_negative_dimension(tmp_path):
    header = {"a": {"dtype": "F32", "shape": [2**63, 0], "data_offsets": [0, 0]}}
    path = _write(tmp_path, "in.safetensors", _safetensors(header))
    _refused(path, "cannot be materialized")
    out = tmp_path / "out.gguf"
    with pytest.raises(UsageError, match="cannot be materialized"):
        gguf_format.write(Bundle(Metadata(), [Tensor.from_raw("a", (2**63, 0), "f32", b"")]), out)
    assert not out.exists()


# ------------------------------------------------------------------------ 8. overlap after unknown


def test_overlapping_gguf_tensors_after_an_unknown_type_are_refused(tmp_path):
    # x spans 0..128; after the unknown u, a's offset was only checked for alignment
    infos = [
        Info("x", [32]),
        Info("u", [32], ggml_type=200, offset=128),
        Info("a", [32], offset=64),
    ]
    path = _write(tmp_path, "in.gguf", Raw(infos=infos, data=bytes(512)).build())
    _refused(path, "overlaps")
    assert run_cli("validate", str(path)).returncode == 5


def test_gguf_tensors_after_an_unknown_type_that_do_not_overlap_still_read(tmp_path):
    infos = [Info("u", [32], ggml_type=200, offset=0), Info("a", [32], offset=128)]
    path = _write(tmp_path, "in.gguf", Raw(infos=infos, data=bytes(256)).build())
    b = bundler.open(path)
    assert list(b.tensors) == ["a"] and b.tensors["a"].numpy().shape == (32,)


# ------------------------------------------------------------------------ 9. strict typing

COERCIONS = {
    "FLOAT32 true": [["k", "FLOAT32", True]],
    "INT32 [1.5, 2.7]": [["k", "ARRAY", "INT32", [1.5, 2.7]]],
    "BOOL ['x', 2]": [["k", "ARRAY", "BOOL", ["x", 2]]],
    "ARRAY of ARRAY holding a scalar": [["k", "ARRAY", "ARRAY", [["UINT8", 1]]]],
    "UINT8 300": [["k", "ARRAY", "UINT8", [300]]],
    "INT64 true": [["k", "INT64", True]],
    "FLOAT64 'x'": [["k", "ARRAY", "FLOAT64", ["x"]]],
}


@pytest.mark.parametrize("case", COERCIONS, ids=str)
def test_typed_metadata_that_does_not_fit_its_type_is_refused_not_coerced(tmp_path, case):
    with pytest.raises(FormatError, match="bad typed metadata"):
        typed_json.from_entries(COERCIONS[case], "x.json", 0)
    path = _write(tmp_path, "in.apr", _typed_files(COERCIONS[case])["apr"])
    _refused(path, "typed metadata")


def test_typed_metadata_of_every_type_still_reads_exactly():
    entries = [
        ["f", "FLOAT32", 1],
        ["n", "ARRAY", "FLOAT64", [1, 2.5, "nan", "-inf"]],
        ["b", "ARRAY", "BOOL", [True, False]],
        ["u", "ARRAY", "UINT64", [2**64 - 1]],
        ["nested", "ARRAY", "ARRAY", [["ARRAY", "STRING", ["x"]], ["ARRAY", "INT8", []]]],
    ]
    md = typed_json.from_entries(entries)
    assert md["f"] == 1.0 and md.typed("u").value.dtype == np.uint64
    assert typed_json.from_entries(typed_json.to_entries(md)) == md


# ------------------------------------------------------------------------ 10. amplification

_PEAK_PROBE = r"""
import sys, tracemalloc
import bundler
import bundler.containers as formats
from bundler.errors import BundlerError
for name in formats.formats():  # every reader imported before memory is traced
    formats.module(name)
bundler.open
tracemalloc.start()
try:
    b = bundler.open(sys.argv[1])
    [(t.name, t.shape) for t in b.tensors.values()]
    outcome = "read"
except BundlerError as exc:
    outcome = type(exc).__name__
print(outcome, tracemalloc.get_traced_memory()[1])
"""

#: case -> (count, largest tracemalloc peak per header byte): the stated worst cases
#: (formats/*.md) with headroom, at a tenth of issue 18's sizes.
AMPLIFICATION = {
    "gguf-nested-arrays": (MAX_NESTED_ARRAYS + 1, 1.0),
    "gguf-zero-tensors": (80_000, 16.0),
    "safetensors-zero-tensors": (150_000, 10.0),
    "apr-long-array": (2_500_000, 14.0),
}


@pytest.mark.parametrize("case", AMPLIFICATION)
def test_amplifying_header_stays_within_the_stated_memory_per_header_byte(tmp_path, case):
    count, per_byte = AMPLIFICATION[case]
    make, _, ext = hostile.CASES[case]
    path = tmp_path / f"{case}.{ext}"
    make(str(path), count)
    done = subprocess.run(
        [sys.executable, "-c", _PEAK_PROBE, str(path)], capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr
    outcome, peak = done.stdout.split()
    assert outcome in ("read", "FormatError"), outcome
    assert int(peak) <= per_byte * path.stat().st_size + (4 << 20), (peak, path.stat().st_size)


def test_more_nested_arrays_than_the_limit_is_a_format_error(tmp_path):
    path = tmp_path / "nested.gguf"
    hostile.gguf_nested_arrays(str(path), MAX_NESTED_ARRAYS + 1)
    _refused(path, "nested arrays")


# ------------------------------------------------------------------------ 11. concurrent writers


def test_of_two_concurrent_writers_without_force_exactly_one_succeeds(tmp_path):
    from safetensors.numpy import save_file

    # large enough that both writers pass the start-up check before either one finishes
    src = tmp_path / "big.safetensors"
    save_file({"w": np.ones((2048, 4096), np.float32)}, str(src))
    for attempt in range(2):
        out = tmp_path / f"out{attempt}.gguf"
        procs = [
            subprocess.Popen(
                [sys.executable, "-m", "bundler", "convert", str(src), "-o", str(out)],
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
            )
            for _ in range(2)
        ]
        results = [(p.wait(), p.stderr.read()) for p in procs]
        codes = sorted(code for code, _ in results)
        assert codes == [0, 5], results
        assert "already exists" in next(err for code, err in results if code == 5)
        bundler.open(out)  # the winner's file, whole
        assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".bundler")] == []


def test_atomic_placement_without_force_refuses_an_existing_target(tmp_path):
    from bundler.atomic import atomic_output
    from bundler.errors import OutputExistsError

    target = tmp_path / "t.bin"
    with atomic_output(target, force=False) as f:
        f.write(b"first")
    with pytest.raises(OutputExistsError), atomic_output(tmp_path / "u.bin", force=False) as f:
        f.write(b"second")
        target.rename(tmp_path / "u.bin")  # appears while the second writer works
    assert (tmp_path / "u.bin").read_bytes() == b"first"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["u.bin"]


# ------------------------------------------------------------------------ 12. truncated offset


def test_safetensors_truncation_offset_is_inside_the_file(tmp_path):
    header = {
        "a": {"dtype": "F32", "shape": [1], "data_offsets": [0, 4]},
        "b": {"dtype": "F32", "shape": [1], "data_offsets": [4, 8]},
    }
    path = _write(tmp_path, "in.safetensors", _safetensors(header, b"\0\0"))
    with pytest.raises(TruncatedError) as info:
        bundler.open(path)
    assert info.value.offset <= path.stat().st_size
