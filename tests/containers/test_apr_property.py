"""Property: any bundle APR can hold is written with the APR invariants and read back equal."""

from __future__ import annotations

import tempfile
import warnings
from pathlib import Path

import numpy as np
from apr_samples import assert_same_bundle, check_layout
from hypothesis import given, settings
from hypothesis import strategies as st

from bundler.bundle import Bundle, Metadata, Tensor, ValueType
from bundler.codecs import get
from bundler.containers import apr
from bundler.errors import AprCompatibilityWarning

_ELEMENT = ["f32", "f16", "bf16", "f64", "i8", "i16", "i32", "i64", "u8"]
_BLOCK = ["q4_0", "q8_0", "q4_k", "q6_k", "iq4_xs"]
_FLAT = ["apr_q4", "apr_q8"]

names = st.text(st.characters(exclude_categories=("Cs",)), min_size=0, max_size=30).filter(
    lambda s: len(s.encode()) <= 256
)


@st.composite
def tensors(draw, name: str) -> Tensor:
    codec = get(draw(st.sampled_from(_ELEMENT + _BLOCK + _FLAT)))
    facts = codec.facts
    rows = draw(st.integers(1, 3))  # zero-size tensors: test_apr_roundtrip
    if facts.flat:
        values = draw(st.lists(st.floats(-1e4, 1e4, width=32), min_size=1, max_size=70))
        return Tensor.from_array(name, np.array(values, np.float32), codec)
    cols = facts.block_size * draw(st.integers(1, 2)) if facts.is_block else draw(st.integers(1, 5))
    shape = (rows, cols)
    data = draw(st.binary(min_size=facts.nbytes(shape), max_size=facts.nbytes(shape)))
    return Tensor.from_raw(name, shape, codec, data)


@st.composite
def bundles(draw) -> Bundle:
    md = Metadata()
    for key in draw(st.lists(names, max_size=5, unique=True)):
        kind = draw(st.sampled_from(["str", "int", "float", "bool", "strings"]))
        if kind == "str":
            md.set(key, draw(names), ValueType.STRING)
        elif kind == "int":
            md.set(key, draw(st.integers(0, 2**64 - 1)), ValueType.UINT64)
        elif kind == "float":
            md.set(key, draw(st.floats(allow_nan=False)), ValueType.FLOAT64)
        elif kind == "bool":
            md.set(key, draw(st.booleans()), ValueType.BOOL)
        else:
            md.set(key, draw(st.lists(names, max_size=4)), ValueType.ARRAY, ValueType.STRING)
    tensor_names = draw(st.lists(names.filter(bool), max_size=6, unique=True))
    return Bundle(md, [draw(tensors(n)) for n in tensor_names])


@settings(max_examples=60, deadline=None)
@given(bundles())
def test_any_bundle_round_trips_with_the_apr_invariants(bundle):
    with tempfile.TemporaryDirectory() as tmp, warnings.catch_warnings():
        warnings.simplefilter("ignore", AprCompatibilityWarning)
        first = Path(tmp) / "a.apr"
        apr.write(bundle, first)
        data = first.read_bytes()
        check_layout(data)
        got = apr.read(first)
        assert_same_bundle(got, bundle)
        apr.write(got, Path(tmp) / "b.apr")
        assert (Path(tmp) / "b.apr").read_bytes() == data
