"""What the facts table derives: byte-swapped fields, scales, aprender's codecs and the
lookups, each from one declared column."""

from __future__ import annotations

import numpy as np
import pytest

from bundler.codecs import TABLE, by_numpy_dtype, get
from bundler.codecs.facts import APRENDER_CODECS, BY_NAME
from bundler.errors import UsageError

ELEMENTS = [f for f in TABLE if f.numpy_dtype and not f.is_block]


@pytest.mark.parametrize("facts", ELEMENTS, ids=lambda f: f.name)
def test_every_element_codec_is_found_by_its_numpy_dtype_in_either_byte_order(facts):
    import ml_dtypes  # noqa: F401  (numpy names bfloat16 and the float8 dtypes through it)

    dtype = np.dtype(facts.numpy_dtype)
    assert by_numpy_dtype(dtype).name == facts.name
    assert by_numpy_dtype(dtype.newbyteorder(">")).name == facts.name


def test_a_numpy_dtype_no_codec_stores_is_a_usage_error():
    with pytest.raises(UsageError, match="no codec stores numpy dtype"):
        by_numpy_dtype(np.dtype("<f2,<f2"))


@pytest.mark.parametrize("facts", TABLE, ids=lambda f: f.name)
def test_the_swapped_fields_of_a_block_are_its_declared_fields(facts):
    if not facts.is_block:
        assert facts.swap_fields == (((0, facts.type_size),) if facts.type_size > 1 else ())
    else:
        block = [(f.offset, f.width) for f in facts.fields if not f.header]
        assert list(facts.swap_fields) == block
        assert all(o + w <= facts.type_size for o, w in facts.swap_fields)


def test_header_fields_lie_in_the_header_and_are_not_swapped_per_block():
    for facts in TABLE:
        for f in facts.fields:
            if f.header:
                assert facts.flat and f.offset + f.width <= facts.header_bytes
                assert (f.offset, f.width) not in facts.swap_fields


def test_aprender_reads_exactly_the_codecs_with_its_own_code():
    assert set(APRENDER_CODECS) == {f.name for f in TABLE if f.apr_own_code is not None}
    assert {"f32", "q4_k", "q6_k", "apr_q4", "apr_q8"} <= set(APRENDER_CODECS)
    assert "q4_0" not in APRENDER_CODECS and get("q4_0").facts.apr_code == 64 + 2


def test_the_name_lookup_holds_every_row():
    assert list(BY_NAME) == [f.name for f in TABLE]
