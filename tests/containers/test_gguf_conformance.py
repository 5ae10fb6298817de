"""The committed conformance files of formats/gguf.md: read as their .json says, written
again to the same bytes, parsed alike by the compiled and interpreted schemas; and the
format document's type tables agree with the codec facts table."""

from __future__ import annotations

import json
import re

import pytest
from format_docs import CONFORMANCE, FORMATS, conformance_maker
from gguf_samples import assert_llama_readable, c_reader_accepts

from bundler.bundle import ValueType
from bundler.codecs.facts import TABLE
from bundler.containers.gguf import reader as gguf_reader
from bundler.containers.gguf.rules import check_llama_rules

GOLDEN = CONFORMANCE / "gguf"
DOC = FORMATS / "gguf.md"
MAKER = conformance_maker("gguf")


@pytest.mark.parametrize("name", MAKER.NAMES)
def test_conformance_file_reads_as_described(name):
    path = GOLDEN / f"{name}.gguf"
    expected = json.loads((GOLDEN / f"{name}.json").read_text(encoding="utf-8"))
    assert MAKER.describe(str(path)) == expected


@pytest.mark.parametrize("name", MAKER.NAMES)
def test_conformance_file_is_what_the_writer_writes(name, tmp_path):
    out = tmp_path / f"{name}.gguf"
    MAKER.build(name, str(out))
    assert out.read_bytes() == (GOLDEN / f"{name}.gguf").read_bytes(), (
        f"the writer no longer reproduces {name}.gguf; if the change is intended, regenerate "
        "with `python formats/conformance/make_gguf.py --force` and review the diff"
    )


@pytest.mark.parametrize("name", MAKER.NAMES)
def test_conformance_file_llama_rules(name):
    path = GOLDEN / f"{name}.gguf"
    if name == "nested_array":
        assert check_llama_rules(path) and c_reader_accepts(path) in (False, None)
    else:
        assert_llama_readable(path, big_endian=name == "big_endian")


def _layout_dict(layout: gguf_reader.Layout) -> dict:
    return {
        "version": layout.version,
        "big_endian": layout.big_endian,
        "alignment": layout.alignment,
        "data_start": layout.data_start,
        "metadata": layout.metadata,
        "tensors": [(t.name, t.dims, t.ggml_type, t.offset, t.at) for t in layout.tensors],
    }


@pytest.mark.parametrize("name", MAKER.NAMES)
def test_compiled_and_interpreted_schemas_agree_on_golden_files(name):
    path = GOLDEN / f"{name}.gguf"
    compiled = gguf_reader.parse(path, compiled=True)
    interpreted = gguf_reader.parse(path, compiled=False)
    assert _layout_dict(compiled) == _layout_dict(interpreted)


@pytest.mark.realfile
def test_compiled_and_interpreted_schemas_agree_on_real_files(smollm2_gguf, vocab_ggufs):
    for path in [smollm2_gguf, *vocab_ggufs[:3]]:
        compiled = gguf_reader.parse(path, compiled=True)
        interpreted = gguf_reader.parse(path, compiled=False)
        assert _layout_dict(compiled) == _layout_dict(interpreted)


def _doc_table(heading: str) -> dict[str, int]:
    """`| NAME | id |` rows of the table under `heading` in formats/gguf.md."""
    text = DOC.read_text(encoding="utf-8")
    section = text.split(heading, 1)[1].split("\n#", 1)[0]
    rows = re.findall(r"^\|\s*`?([A-Za-z0-9_]+)`?\s*\|\s*(\d+)\s*\|", section, re.MULTILINE)
    return {name: int(code) for name, code in rows}


def test_doc_value_types_match_the_model():
    assert _doc_table("### Value types") == {t.name: int(t) for t in ValueType}


def test_doc_tensor_types_match_the_facts_table():
    expected = {f.name.upper(): f.ggml_id for f in TABLE if f.ggml_id is not None}
    assert _doc_table("### Tensor types") == expected


def test_doc_tensor_type_sizes_match_the_facts_table():
    text = DOC.read_text(encoding="utf-8").split("### Tensor types", 1)[1].split("\n#", 1)[0]
    rows = re.findall(r"^\|\s*`?(\w+)`?\s*\|\s*\d+\s*\|\s*(\d+)\s*\|\s*(\d+)\s*\|", text, re.M)
    sizes = {f.name.upper(): (f.block_size, f.type_size) for f in TABLE if f.ggml_id is not None}
    assert {n: (int(b), int(s)) for n, b, s in rows} == sizes
