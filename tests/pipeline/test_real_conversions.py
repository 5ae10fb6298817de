"""End to end on real files: the installed `bundler` command quantizes and converts SmolLM2
(GGUF, written by llama.cpp) and MiniLM (SafeTensors, written by the reference serializer),
and every output is read back without bundler's readers.

What is checked for every output: each tensor's codec is the one llama-quantize's rules
give, its shape and byte size are right, quantized bytes equal `gguf.quants.quantize` of
the source values (of `gguf.quants.dequantize` of them when the source was already
quantized), copied tensors are bit-identical, and general.file_type /
general.quantization_version are set.
"""

from __future__ import annotations

import functools
import json
import re
from dataclasses import dataclass
from pathlib import Path

import gguf
import numpy as np
import pytest
from conftest import run_cli
from conversion_oracles import (
    Stored,
    apr_typed_metadata,
    read_apr,
    read_gguf,
    read_safetensors,
)
from gguf import GGMLQuantizationType as Q

import bundler

pytestmark = pytest.mark.realfile


@dataclass(frozen=True)
class Case:
    output: str
    source: str  # fixture name
    command: tuple[str, ...]
    type: str | None  # codec asked for; None for convert
    file_type: gguf.LlamaFileType | None = None

    @property
    def format(self) -> str:
        return self.output.rsplit(".", 1)[-1]


CASES = [
    Case(
        "smollm2-q8_0.gguf", "smollm2_gguf", ("quantize", "--type", "Q8_0", "--allow-requantize"),
        "q8_0", gguf.LlamaFileType.MOSTLY_Q8_0,
    ),
    Case(
        "smollm2-q4_0.apr", "smollm2_gguf", ("quantize", "--type", "Q4_0", "--allow-requantize"),
        "q4_0", gguf.LlamaFileType.MOSTLY_Q4_0,
    ),
    Case("smollm2.safetensors", "smollm2_gguf", ("convert",), None),
] + [
    Case(
        f"minilm-{codec}.{ext}", "minilm_safetensors", ("quantize", "--type", codec.upper()),
        codec, file_type,
    )
    for codec, file_type in [
        ("q4_0", gguf.LlamaFileType.MOSTLY_Q4_0),
        ("q5_1", gguf.LlamaFileType.MOSTLY_Q5_1),
        ("q8_0", gguf.LlamaFileType.MOSTLY_Q8_0),
    ]
    for ext in ("gguf", "apr")
]  # fmt: skip
QUANTIZE_CASES = [c for c in CASES if c.type]
IDS = [c.output for c in CASES]

#: Names llama-quantize never quantizes (its list, plus the Hugging Face spellings in MiniLM).
KEPT = re.compile(r"norm\.weight$|LayerNorm|position_embeddings|token_type_embeddings")
#: SmolLM2 tensors whose quantized bytes are compared (all others: codec, size and copies).
SMOLLM2_SAMPLE = re.compile(r"^blk\.(0|29)\.")


def expected_codec(name: str, shape: tuple[int, ...], source: str, want: str | None) -> str:
    """The codec llama-quantize gives a tensor of these two models."""
    if want is None or not name.endswith("weight") or len(shape) < 2 or KEPT.search(name):
        return source
    if name == "token_embd.weight":  # SmolLM2 ties the output to the token embedding
        return "q8_0" if shape[-1] % 256 else ("q8_0" if want == "q8_0" else "q6_k")
    return want


# ------------------------------------------------------------------ the runs, once


@pytest.fixture(scope="module")
def sources(request) -> dict[str, tuple[Path, dict[str, Stored]]]:
    """Each source file with its tensors as the oracle packages read them (GGUF in file
    order; safe_open lists names sorted)."""
    out = {}
    smol = request.getfixturevalue("smollm2_gguf")
    out["smollm2_gguf"] = (smol, read_gguf(smol)[0])
    mini = request.getfixturevalue("minilm_safetensors")
    arrays, _ = read_safetensors(mini)
    out["minilm_safetensors"] = (mini, {k: _stored(a) for k, a in arrays.items()})
    return out


def _stored(a: np.ndarray) -> Stored:
    codec = {np.dtype("<f4"): "f32", np.dtype("<i8"): "i64"}[a.dtype]
    return Stored(codec, a.shape, a.reshape(-1).view(np.uint8))


@pytest.fixture(scope="module")
def converted(tmp_path_factory, sources) -> dict[str, tuple[Path, dict]]:
    """Every case run through the installed command: output path and its --json report."""
    directory = tmp_path_factory.mktemp("conversions")
    runs = {}
    for case in CASES:
        src, _ = sources[case.source]
        dst = directory / case.output
        done = run_cli(case.command[0], str(src), "-o", str(dst), *case.command[1:], "--json")
        assert done.returncode == 0, done.stderr
        runs[case.output] = (dst, json.loads(done.stdout))
    return runs


@functools.cache
def read_output(path: Path) -> tuple[dict[str, Stored], dict[str, tuple[str, object]]]:
    """Tensors and typed scalar metadata of an output, read without bundler (once: the
    GGUF reader takes seconds over SmolLM2's vocabulary)."""
    fmt = path.suffix[1:]
    if fmt == "gguf":
        tensors, md = read_gguf(path)
        return tensors, {k: (t.name, v) for k, (t, v) in md.items()}
    if fmt == "apr":
        tensors, md = read_apr(path)
        return tensors, apr_typed_metadata(md)
    arrays, md = read_safetensors(path)
    # formats/safetensors.md: block tensors are U8 rows; `bundler.tensors` names the codecs
    listed = {
        name: (codec, tuple(shape)) for name, codec, shape in json.loads(md["bundler.tensors"])
    }
    tensors = {
        name: Stored(listed[name][0], listed[name][1], a.reshape(-1).view(np.uint8))
        for name, a in arrays.items()
    }
    typed = [e for e in json.loads(md["bundler.metadata"]) if e[1] != "ARRAY"]
    return tensors, {e[0]: (e[1], e[2]) for e in typed}


# ------------------------------------------------------------------ the checks


@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_report_lists_every_source_tensor_once(case, converted, sources):
    path, report = converted[case.output]
    _, source = sources[case.source]
    assert report["written"] is True
    assert report["outputs"] == [str(path)]
    names = [t["name"] for t in report["tensors"]]
    assert sorted(names) == sorted(source) and len(set(names)) == len(names)
    assert report["target_bytes"] == sum(t["target_bytes"] for t in report["tensors"])


@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_every_tensor_has_the_planned_codec_shape_and_size(case, converted, sources):
    path, report = converted[case.output]
    _, source = sources[case.source]
    out, _ = read_output(path)
    assert set(out) == set(source)
    planned = {t["name"]: t for t in report["tensors"]}
    for name, src in source.items():
        want = expected_codec(name, src.shape, src.codec, case.type)
        got = out[name]
        assert (got.codec, got.shape) == (want, src.shape), name
        assert planned[name]["to"] == want, name
        assert got.nbytes == planned[name]["target_bytes"] == _nbytes(want, src.shape), name


def _nbytes(codec: str, shape: tuple[int, ...]) -> int:
    if codec in ("f32", "i64"):
        return int(np.prod(shape)) * (4 if codec == "f32" else 8)
    block, size = gguf.GGML_QUANT_SIZES[Q[codec.upper()]]
    return int(np.prod(shape)) // block * size


def test_gguf_to_gguf_keeps_the_tensor_order(converted, sources):
    for case in CASES:
        if case.format == "gguf" and case.source == "smollm2_gguf":
            out, _ = read_output(converted[case.output][0])
            assert list(out) == list(sources[case.source][1]), case.output


@pytest.mark.parametrize("case", QUANTIZE_CASES, ids=[c.output for c in QUANTIZE_CASES])
def test_quantized_tensors_equal_gguf_quants_of_the_source_values(case, converted, sources):
    path, _ = converted[case.output]
    _, source = sources[case.source]
    out, _ = read_output(path)
    compared = 0
    for name, src in source.items():
        want = expected_codec(name, src.shape, src.codec, case.type)
        if want == src.codec or (case.source == "smollm2_gguf" and not SMOLLM2_SAMPLE.match(name)):
            continue
        expected = gguf.quants.quantize(_values(src), Q[want.upper()])
        assert np.array_equal(out[name].data, expected.reshape(-1)), name
        compared += 1
    assert compared >= 6


def _values(src: Stored) -> np.ndarray:
    if src.codec == "f32":
        return src.data.view(np.float32).reshape(src.shape)
    qtype = Q[src.codec.upper()]
    rows = src.data.reshape(-1, src.nbytes // int(np.prod(src.shape[:-1])))
    return gguf.quants.dequantize(rows, qtype).reshape(src.shape)


@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_tensors_kept_in_their_codec_are_bit_identical(case, converted, sources):
    path, _ = converted[case.output]
    _, source = sources[case.source]
    out, _ = read_output(path)
    kept = [
        n for n, s in source.items() if expected_codec(n, s.shape, s.codec, case.type) == s.codec
    ]
    assert kept
    for name in kept:
        assert np.array_equal(out[name].data, source[name].data), name


@pytest.mark.parametrize("case", QUANTIZE_CASES, ids=[c.output for c in QUANTIZE_CASES])
def test_file_type_and_quantization_version_are_set(case, converted):
    _, metadata = read_output(converted[case.output][0])
    assert metadata["general.file_type"] == ("UINT32", int(case.file_type))
    assert metadata["general.quantization_version"] == ("UINT32", 2)


def test_requantizing_without_the_flag_is_refused_before_writing(smollm2_gguf, tmp_path):
    dst = tmp_path / "out.gguf"
    done = run_cli("quantize", str(smollm2_gguf), "-o", str(dst), "--type", "Q8_0")
    assert done.returncode == 2
    assert "--allow-requantize" in done.stderr and "loses accuracy" in done.stderr
    assert "Traceback" not in done.stderr
    assert not dst.exists() and list(tmp_path.iterdir()) == []


def test_convert_keeps_the_source_metadata_with_its_types(converted, smollm2_gguf):
    path, report = converted["smollm2.safetensors"]
    assert all(t["action"] == "copy" for t in report["tensors"])
    assert bundler.open(path).metadata == bundler.open(smollm2_gguf).metadata
