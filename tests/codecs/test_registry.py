"""The codec registry and the public encode/decode contract."""

from __future__ import annotations

import threading

import gguf
import numpy as np
import pytest
from gguf import GGMLQuantizationType as T

import bundler
from bundler.codecs import (
    TABLE,
    by_apr_code,
    by_ggml_id,
    by_safetensors_dtype,
    get,
    kernel_threads,
    names,
    set_threads,
    thread_count,
)
from bundler.errors import NonFiniteError, ShapeError, UnknownCodecError

BLOCK_CODECS = ["q4_0", "q4_1", "q5_0", "q5_1", "q8_0", "q8_1"]
ENCODABLE = [f.name for f in TABLE if f.has_kernels and not f.flat]


def test_names_are_unique_and_lowercase():
    assert len(set(names())) == len(names()) == len(TABLE)
    assert all(n == n.lower() for n in names())


#: GGML ids the gguf package (0.19.0) knows: all of bundler's but Q2_0 (42), which
#: test_c_oracle checks against the C library's type traits like every other id.
GGUF_IDS = {t.value for t in T}


@pytest.mark.parametrize("facts", [f for f in TABLE if f.ggml_id in GGUF_IDS], ids=lambda f: f.name)
def test_block_size_and_bytes_agree_with_gguf_constants(facts):
    qtype = T(facts.ggml_id)
    expected = gguf.GGML_QUANT_SIZES[qtype]
    if facts.name == "q8_1":  # gguf 0.19.0 says 40 bytes; ggml's block_q8_1 is 2+2+32 = 36
        expected = (32, 36)
    assert (facts.block_size, facts.type_size) == expected
    assert qtype.name.lower() == facts.name


@pytest.mark.parametrize(
    "name, bpw",
    [("q4_0", 4.5), ("q4_1", 5.0), ("q5_0", 5.5), ("q5_1", 6.0), ("q8_0", 8.5), ("f16", 16.0)],
)
def test_bits_per_weight_include_the_block_header(name, bpw):
    assert get(name).facts.bits_per_weight == bpw


def test_lookup_by_name_is_case_insensitive_and_by_id_by_apr_code_by_safetensors_dtype():
    assert get("Q4_0") is get("q4_0") is by_ggml_id(2) is get(2)
    assert by_apr_code(66) is get("q4_0")
    assert by_apr_code(8) is by_apr_code(128) is get("apr_q4")  # old AprQ4 code
    assert by_apr_code(3) is get("f64")  # APR's 3 is F64, not GGML's Q4_1
    assert by_safetensors_dtype("BF16") is get("bf16")
    assert get(get("q8_0")) is get("q8_0")


@pytest.mark.parametrize("wanted", ["q4_2", "", "Q9_K", 999])
def test_unknown_codec_names_every_valid_one(wanted):
    with pytest.raises(UnknownCodecError) as info:
        get(wanted)
    message = str(info.value)
    assert repr(wanted) in message or str(wanted) in message
    if isinstance(wanted, str):
        assert all(n in message for n in ("q4_0", "q8_0", "bf16"))


def test_codec_identity_is_its_json_config():
    assert get("q5_1").config() == {"id": "q5_1"}
    assert get("q5_1") == get("Q5_1") and hash(get("q5_1")) == hash(get("q5_1"))
    assert repr(get("q5_1")) == "Codec('q5_1')"


@pytest.mark.parametrize("name", BLOCK_CODECS)
def test_encode_returns_uint8_rows_shaped_like_gguf_quantize(name):
    x = np.zeros((2, 3, 64), np.float32)
    out = bundler.encode(x, name)
    assert out.dtype == np.uint8
    assert out.shape == (2, 3, 2 * get(name).facts.type_size)
    if name != "q8_1":
        assert out.shape == gguf.quants.quantize(x, T[name.upper()]).shape
    assert bundler.decode(out, name).shape == x.shape


@pytest.mark.parametrize("name", BLOCK_CODECS)
def test_encode_and_decode_fill_a_callers_buffer(name):
    x = np.linspace(-1, 1, 128, dtype=np.float32).reshape(2, 64)
    out = np.empty(get(name).encoded_shape(x.shape), np.uint8)
    assert bundler.encode(x, name, out=out) is out
    values = np.empty(x.shape, np.float32)
    assert bundler.decode(out, name, out=values) is values
    np.testing.assert_array_equal(values, bundler.decode(bundler.encode(x, name), name))


def test_a_wrong_output_buffer_is_refused():
    x = np.zeros((2, 64), np.float32)
    with pytest.raises(ShapeError, match="C-contiguous uint8 of shape"):
        bundler.encode(x, "q4_0", out=np.empty((2, 35), np.uint8))
    with pytest.raises(ShapeError):
        bundler.encode(x, "q4_0", out=np.empty((2, 36), np.int8))


@pytest.mark.parametrize("name", BLOCK_CODECS)
@pytest.mark.parametrize("cols", [1, 31, 33, 100])
def test_a_last_axis_not_a_multiple_of_the_block_is_refused(name, cols):
    with pytest.raises(ShapeError, match="multiple of 32"):
        bundler.encode(np.zeros((2, cols), np.float32), name)


def test_decode_refuses_a_byte_count_that_is_not_whole_blocks():
    with pytest.raises(ShapeError, match="whole blocks of 18 bytes"):
        bundler.decode(np.zeros((2, 20), np.uint8), "q4_0")
    with pytest.raises(ShapeError, match="is 36 bytes, got 18"):
        bundler.decode(np.zeros(18, np.uint8), "q4_0", shape=(64,))


@pytest.mark.parametrize("name", BLOCK_CODECS)
@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_nonfinite_input_is_refused_with_its_position(name, bad):
    x = np.zeros((2, 3, 64), np.float32)
    x[1, 2, 40] = bad
    with pytest.raises(NonFiniteError) as info:
        bundler.encode(x, name)
    assert info.value.index == (1, 2, 40)
    assert "(1, 2, 40)" in str(info.value)


def test_nonfinite_position_is_found_in_strided_input_too():
    x = np.zeros((4, 128), np.float64)
    x[3, 126] = np.nan
    with pytest.raises(NonFiniteError) as info:
        bundler.encode(x[:, ::2], "q8_0")
    assert info.value.index == (3, 63)


@pytest.mark.parametrize("name", ["f32", "f16", "bf16"])
def test_float_codecs_store_nan_and_infinity(name):
    x = np.array([[np.nan, np.inf, -np.inf, 1.0]], np.float32)
    y = bundler.decode(bundler.encode(x, name), name)
    assert np.isnan(y[0, 0]) and y[0, 1] == np.inf and y[0, 2] == -np.inf and y[0, 3] == 1.0


def test_f16_overflow_becomes_infinity_like_ggml():
    y = bundler.decode(bundler.encode(np.array([70000.0, -1e9], np.float32), "f16"), "f16")
    assert y.tolist() == [np.inf, -np.inf]


@pytest.mark.parametrize(
    "name", ["i8", "i16", "i32", "i64", "u8", "u16", "u32", "u64", "f64", "bool"]
)
def test_element_dtypes_round_trip_their_own_values(name):
    dtype = np.dtype(get(name).facts.numpy_dtype)
    x = (np.arange(24) % 2).astype(dtype).reshape(2, 3, 4)
    y = bundler.decode(bundler.encode(x, name), name)
    assert y.dtype == dtype.newbyteorder("=") and np.array_equal(x, y)


def test_storing_floats_in_an_integer_dtype_is_refused():
    with pytest.raises(bundler.UsageError, match="cannot store float"):
        bundler.encode(np.ones(4, np.float32), "i32")


@pytest.mark.parametrize("name", ["f4", "f6_e2m3"])
def test_codecs_without_kernels_say_they_can_only_be_copied(name):
    with pytest.raises(bundler.UsageError, match="stored and copied but not encoded"):
        bundler.encode(np.zeros(256, np.float32), name)


@pytest.mark.parametrize("name", ENCODABLE)
def test_empty_input_gives_empty_output(name):
    cols = get(name).facts.block_size
    x = np.zeros((0, cols), np.float32)
    w = np.ones(cols, np.float32) if get(name).facts.requires_importance else None
    assert bundler.encode(x, name, importance=w).shape == (0, get(name).facts.type_size)


def _threads_seen_by_a_kernel_call(encode) -> int:
    """The compiler's thread count in a new thread right after it ran `encode`."""
    import numba

    seen = []
    worker = threading.Thread(target=lambda: (encode(), seen.append(numba.get_num_threads())))
    worker.start()
    worker.join()
    return seen[0]


def test_set_threads_applies_to_kernels_called_from_any_thread():
    x = np.ones((4, 64), np.float32)
    try:
        assert set_threads(1) == 1 == thread_count()
        assert _threads_seen_by_a_kernel_call(lambda: bundler.encode(x, "q8_0")) == 1
    finally:
        set_threads(None)
    assert thread_count() >= 1


def test_kernel_threads_sets_the_count_for_one_thread_and_restores_it():
    x = np.ones((4, 64), np.float32)

    def encode_with_one_thread():
        with kernel_threads(1):
            bundler.encode(x, "q8_0")

    assert _threads_seen_by_a_kernel_call(encode_with_one_thread) == 1
    with kernel_threads(1):
        pass
    assert _threads_seen_by_a_kernel_call(lambda: bundler.encode(x, "q8_0")) == thread_count()
