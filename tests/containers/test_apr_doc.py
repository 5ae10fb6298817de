"""formats/apr.md agrees with the codec facts table."""

from __future__ import annotations

from format_docs import FORMATS, marked_table_rows

from bundler.codecs import TABLE

DOC = FORMATS / "apr.md"


def _size(f) -> str:
    if f.flat and f.header_bytes:
        return f"{f.header_bytes} + {f.type_size} per value"
    if f.flat:
        return f"{f.type_size} per {f.block_size} values (flat)"
    if f.block_size == 1:
        return f"{f.type_size} per value"
    return f"{f.type_size} per {f.block_size} values"


def _expected_rows() -> list[list[str]]:
    rows = []
    for f in sorted((f for f in TABLE if f.apr_code is not None), key=lambda f: f.apr_code):
        ggml = "-" if f.ggml_id is None else str(f.ggml_id)
        whose = "aprender" if f.apr_native else "bundler"
        rows.append([str(f.apr_code), f.name, ggml, _size(f), whose])
    return rows


def test_dtype_code_table_matches_the_codec_facts():
    assert marked_table_rows(DOC, "dtype codes") == _expected_rows()


def test_aprender_codes_in_the_doc_are_exactly_aprenders():
    native = {int(r[0]) for r in marked_table_rows(DOC, "dtype codes") if r[4] == "aprender"}
    assert native == {0, 1, 3, 4, 5, 6, 7, 12, 14, 30, 128, 129}


def test_extension_codes_are_64_plus_the_ggml_id():
    for code, _name, ggml, _size, whose in marked_table_rows(DOC, "dtype codes"):
        if whose == "bundler":
            assert int(code) == 64 + int(ggml)
