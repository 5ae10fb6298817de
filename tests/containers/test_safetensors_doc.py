"""formats/safetensors.md agrees with the codec facts table and the writer's dtype order."""

from __future__ import annotations

import re

import ml_dtypes  # noqa: F401  (numpy names for bfloat16 and the float8 dtypes)
import numpy as np
from format_docs import FORMATS, marked_table_rows

from bundler.codecs import TABLE, by_safetensors_dtype
from bundler.containers.safetensors.schema import DTYPE_ORDER, dtype_bits

DOC = FORMATS / "safetensors.md"


def _expected_rows() -> list[list[str]]:
    rows = []
    for rank, dtype in enumerate(DTYPE_ORDER):
        facts = by_safetensors_dtype(dtype).facts
        numpy = np.dtype(facts.numpy_dtype).name if facts.numpy_dtype else "packed bytes"
        rows.append([str(rank), dtype, str(dtype_bits(dtype)), facts.name, numpy])
    return rows


def test_dtype_table_matches_the_codec_facts():
    assert marked_table_rows(DOC, "dtypes") == _expected_rows()


def test_dtype_table_lists_every_safetensors_dtype_of_the_facts_once():
    listed = [row[1] for row in marked_table_rows(DOC, "dtypes")]
    assert sorted(listed) == sorted(f.safetensors_dtype for f in TABLE if f.safetensors_dtype)
    assert len(set(listed)) == len(listed)


def test_the_doc_example_header_is_what_the_writer_writes(tmp_path):
    from bundler.bundle import Bundle, Metadata, Tensor, ValueType
    from bundler.containers import safetensors as stf

    md = Metadata({"general.name": "tiny"})
    md.set("llama.block_count", 1, ValueType.UINT32)
    bundle = Bundle(
        md,
        [
            Tensor.from_raw("w", (2, 64), "q4_0", np.zeros(72, np.uint8)),
            Tensor.from_array("norm", np.ones(64, np.float32)),
        ],
    )
    stf.write(bundle, tmp_path / "ex.safetensors")
    data = (tmp_path / "ex.safetensors").read_bytes()
    n = int.from_bytes(data[:8], "little")
    example = re.search(r"header \(N = (\d+),.*?\n```\n(.*?)\n```", DOC.read_text(), re.S)
    assert example, "example header missing"
    assert int(example.group(1)) == n
    assert example.group(2) == data[8 : 8 + n].decode()
