"""The scale fields of every codec are the bytes its decoder multiplies by: a NaN written
into any of them turns the decoded block into NaN (into zeros for apr_q4, as aprender
decodes it), and the scan names that field and block."""

from __future__ import annotations

import numpy as np
import pytest

from bundler.bundle import Tensor
from bundler.codecs import TABLE, get
from bundler.scales import scale_fields, scan

NAN = {2: np.array([0x7E00], "<u2").view(np.uint8), 4: np.array([0x7FC00000], "<u4").view(np.uint8)}
SCANNED = [f.name for f in TABLE if f.has_kernels and scale_fields(f)]


#: Encodable block codecs without a float scale field: MXFP4's is an E8M0 exponent byte, a
#: power of two for every byte value (ggml decodes 0xFF as 2^126, not NaN), and NVFP4's are
#: unsigned E4M3 bytes, a number for every byte value (0x7F decodes to 0); IQ1_M's half
#: scale is split into four nibbles, the top bits of its four 16-bit sub-block scale words.
EXPONENT_SCALES = {"mxfp4", "nvfp4"}
SPLIT_SCALES = {"iq1_m"}


def test_every_encodable_block_codec_but_the_exponent_scaled_has_scales():
    encodable_blocks = {f.name for f in TABLE if f.has_kernels and f.is_block}
    assert set(SCANNED) == encodable_blocks - EXPONENT_SCALES - SPLIT_SCALES


@pytest.mark.parametrize("name", SCANNED)
def test_a_nan_in_any_scale_field_makes_the_block_decode_to_nan(name):
    codec = get(name)
    facts = codec.facts
    rng = np.random.default_rng(7)
    x = rng.standard_normal((2, 512)).astype(np.float32)
    # the codecs ggml quantizes only with importance weights get a positive row
    weights = rng.uniform(0.5, 2, 512).astype(np.float32) if facts.requires_importance else None
    raw = codec.encode(x, importance=weights).reshape(-1)
    assert not np.isnan(codec.decode(raw, x.shape)).any()
    for field in scale_fields(facts):
        bad = raw.copy()
        block = 1 if not facts.flat or facts.block_size > 1 else 0
        at = block * facts.type_size + field.offset
        bad[at : at + field.width] = NAN[field.width]
        decoded = codec.decode(bad, x.shape).reshape(-1)
        lo = block * facts.block_size
        span = decoded[lo : lo + facts.block_size] if facts.block_size > 1 else decoded
        if name == "apr_q4":
            assert (span == 0).all(), field
        else:
            assert np.isnan(span).all(), field
        findings = scan(Tensor.from_raw("t", x.shape, codec, bad), chunk_bytes=facts.type_size)
        assert [(f.field, f.kind, f.blocks) for f in findings] == [(field.name, "nan", [block])]


@pytest.mark.parametrize(
    ("name", "fields"),
    [
        ("q4_1", [("d", 0, 2), ("m", 2, 2)]),
        ("q8_1", [("d", 0, 2)]),  # its second half is a sum, not a scale
        ("q2_k", [("d", 80, 2), ("dmin", 82, 2)]),
        ("q8_k", [("d", 0, 4)]),  # its 2-byte fields are int16 sums
        ("apr_q8", [("scale", 0, 4)]),
        ("mxfp4", []),
    ],
)
def test_scale_fields_of_codecs_off_the_plain_rule(name, fields):
    assert [(f.name, f.offset, f.width) for f in scale_fields(get(name).facts)] == fields
