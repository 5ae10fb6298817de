"""aprender's AprQ4 / AprQ8: golden bytes, a scalar reference, error bounds and edge cases."""

from __future__ import annotations

import math
import struct
import subprocess
import sys

import numpy as np
import pytest

from bundler.codecs import by_apr_code, get, kernel_threads
from bundler.errors import NonFiniteError, ShapeError

Q4 = get("apr_q4")
Q8 = get("apr_q8")

# ------------------------------------------------------------------ golden bytes

#: 38 values: a full block (max |x| 7 -> scale 1.0) and a partial all-zero block of 6.
GOLDEN_Q4_IN = np.array([1.0, -1.0, 0.5, 0.25, 3.5, -7.0, 0.0, 0.1] + [0.0] * 30, np.float32)
GOLDEN_Q4 = bytes.fromhex(
    # scale 1.0; pairs (1, -1) (0.5 -> 1, 0.25 -> 0) (3.5 -> 4, -7) (0, 0.1 -> 0) ...
    "003c79891c88888888888888888888888888"
    # the partial all-zero block: scale 1.0, six codes of 8, the unused nibbles zero
    "003c88888800000000000000000000000000"
)
GOLDEN_Q8_IN = np.array([[1.0, -2.0], [0.5, 127.0]], np.float32)
GOLDEN_Q8 = bytes.fromhex("0000803f01fe017f")  # scale 1.0; 0.5 rounds away from zero to 1


def test_apr_q4_golden_bytes():
    assert Q4.encode(GOLDEN_Q4_IN).tobytes() == GOLDEN_Q4


def test_apr_q4_golden_decode():
    want = np.array([1, -1, 1, 0, 4, -7, 0, 0] + [0] * 30, np.float32)
    np.testing.assert_array_equal(Q4.decode(GOLDEN_Q4, (38,)), want)


def test_apr_q8_golden_bytes():
    assert Q8.encode(GOLDEN_Q8_IN).tobytes() == GOLDEN_Q8


def test_apr_q8_golden_decode():
    want = np.array([[1, -2], [1, 127]], np.float32)
    np.testing.assert_array_equal(Q8.decode(GOLDEN_Q8, (2, 2)), want)


# -------------------------------------------------- a scalar reference of aprender's loops


def _round_away(v: float) -> float:
    return math.copysign(math.floor(abs(v) + 0.5), v)


def reference_q4(x: np.ndarray) -> bytes:
    """aprender's add_q4_tensor, one value at a time in float32."""
    flat = x.astype(np.float32).reshape(-1)
    out = bytearray()
    for start in range(0, flat.size, 32):
        block = flat[start : start + 32]
        amax = max((abs(v) for v in block), default=np.float32(0))
        scale = np.float32(1.0) if amax == 0 else np.float32(amax) / np.float32(7.0)
        out += struct.pack("<e", float(scale))
        packed = bytearray(16)
        for i, v in enumerate(block):
            q = int(min(max(_round_away(float(np.float32(v) / scale)), -8), 7))
            packed[i // 2] |= (q + 8) << (4 * (i % 2))
        out += packed
    return bytes(out)


def reference_q8(x: np.ndarray) -> bytes:
    flat = x.astype(np.float32).reshape(-1)
    if flat.size == 0:
        return b""
    amax = max(abs(v) for v in flat)
    scale = np.float32(1.0) if amax == 0 else np.float32(amax) / np.float32(127.0)
    codes = [int(min(max(_round_away(float(v / scale)), -127), 127)) for v in flat]
    return struct.pack("<f", float(scale)) + struct.pack(f"<{len(codes)}b", *codes)


def _inputs(seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    n = int(rng.integers(1, 200))
    x = rng.standard_normal(n).astype(np.float32) * np.float32(10.0 ** rng.integers(-3, 4))
    # exact ties: multiples of half a step of the block scale
    x[: min(n, 16)] = np.float32(0.5) * rng.integers(-14, 15, min(n, 16)).astype(np.float32)
    return x


@pytest.mark.parametrize("seed", range(12))
def test_apr_q4_matches_scalar_reference(seed):
    x = _inputs(seed)
    assert Q4.encode(x).tobytes() == reference_q4(x)


@pytest.mark.parametrize("seed", range(12))
def test_apr_q8_matches_scalar_reference(seed):
    x = _inputs(seed)
    assert Q8.encode(x).tobytes() == reference_q8(x)


# ----------------------------------------------------------------- rounding and bounds


def test_apr_q8_rounds_ties_away_from_zero():
    # scale 1.0 (max 127): each code is the value rounded as Rust's f32::round rounds
    v = [0.5, -0.5, 1.5, -1.5, 2.5, -2.5, 0.49999997, -0.49999997, 3.0, 126.5, -127.0]
    want = [1, -1, 2, -2, 3, -3, 0, 0, 3, 127, -127]
    raw = Q8.encode(np.array(v, np.float32))
    assert raw[4:].view(np.int8).tolist() == want


def test_apr_q4_rounds_ties_away_from_zero():
    # scale 1.0 (max 7): halves round away from zero; just below a half rounds down
    v = np.array([7.0, 0.5, -0.5, 1.5, -1.5, 6.5, -6.5, 0.49999997, -7.0] + [0.0] * 23, np.float32)
    want = np.array([7, 1, -1, 2, -2, 7, -7, 0, -7] + [0] * 23, np.float32)
    np.testing.assert_array_equal(Q4.decode(Q4.encode(v), (32,)), want)


def test_apr_codes_of_a_scale_that_underflowed_are_rusts_casts():
    # max|x| / 7 of the smallest subnormal rounds to a zero scale: a quotient x / 0 is
    # +-inf (clamped to the extreme codes) or, for x = 0, NaN (cast to code 0)
    tiny = np.float32(2.0**-149)
    x = np.array([tiny, -tiny, 0.0] + [0.0] * 29, np.float32)
    raw = Q4.encode(x)
    assert raw[:2].tobytes() == b"\x00\x00"  # the half of +0.0
    assert raw[2] == (7 + 8) | (-8 + 8) << 4 and raw[3] == 8 | 8 << 4


@pytest.mark.parametrize("seed", range(6))
def test_apr_q4_error_is_at_most_half_a_step(seed):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((8, 96)).astype(np.float32)
    got = Q4.decode(Q4.encode(x), x.shape).reshape(-1, 32)
    blocks = x.reshape(-1, 32)
    step = np.abs(blocks).max(axis=1, keepdims=True) / 7
    # half a step, plus the half-precision rounding of the scale times the largest code
    assert np.all(np.abs(got - blocks) <= step * (0.5 + 8 * 2.0**-11))


@pytest.mark.parametrize("seed", range(6))
def test_apr_q8_error_is_at_most_half_a_step(seed):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((5, 77)).astype(np.float32) * 3
    got = Q8.decode(Q8.encode(x), x.shape)
    step = np.abs(x).max() / 127
    assert np.all(np.abs(got - x) <= step * (0.5 + 2.0**-20))


# ------------------------------------------------------------------------ edge cases


def test_apr_q4_pairs_adjacent_values_low_nibble_first():
    x = np.zeros(32, np.float32)
    x[0], x[1], x[31] = 7.0, -7.0, 3.0
    raw = Q4.encode(x)
    assert raw[2] == (15 | 1 << 4)  # value 0 low, value 1 high
    assert raw[17] == (8 | 11 << 4)  # value 30 (zero) low, value 31 high


def test_apr_q4_all_zero_block_has_scale_one():
    raw = Q4.encode(np.zeros(32, np.float32))
    assert raw.tobytes() == bytes.fromhex("003c") + b"\x88" * 16


@pytest.mark.parametrize("n", [1, 31, 33, 63, 65])
def test_apr_q4_partial_last_block_is_zero_filled(n):
    x = np.full(n, 7.0, np.float32)  # scale 1.0, exact in half precision
    raw = Q4.encode(x)
    assert raw.size == Q4.facts.nbytes((n,)) == -(-n // 32) * 18
    codes = np.zeros(-(-n // 32) * 32, np.uint8)
    codes[:n] = 15
    nibbles = raw.reshape(-1, 18)[:, 2:]
    assert np.array_equal(nibbles & 0x0F, codes.reshape(-1, 32)[:, 0::2])
    assert np.array_equal(nibbles >> 4, codes.reshape(-1, 32)[:, 1::2])
    np.testing.assert_array_equal(Q4.decode(raw, (n,)), x)


@pytest.mark.parametrize(
    ("scale_bits", "why"),
    [(0x7E00, "nan"), (0x7C00, "inf"), (0xFC00, "-inf"), (0x0001, "subnormal"), (0x03FF, "sub")],
)
def test_apr_q4_unusable_scale_decodes_as_zero(scale_bits, why):
    raw = np.frombuffer(struct.pack("<H", scale_bits) + b"\x0f" * 16, np.uint8)
    np.testing.assert_array_equal(Q4.decode(raw, (32,)), np.zeros(32, np.float32))


def test_apr_q4_tiny_block_gets_a_subnormal_scale_that_decodes_as_zero():
    """aprender's behaviour: a block whose max|x|/7 is below the smallest normal half."""
    x = np.full(32, 1e-5, np.float32)
    np.testing.assert_array_equal(Q4.decode(Q4.encode(x), (32,)), np.zeros(32, np.float32))


def test_apr_q4_lowest_code_decodes_as_minus_eight_steps():
    raw = np.frombuffer(struct.pack("<e", 0.5) + b"\x00" * 16, np.uint8)
    np.testing.assert_array_equal(Q4.decode(raw, (32,)), np.full(32, -4.0, np.float32))


def test_apr_q8_all_zero_has_scale_one():
    assert Q8.encode(np.zeros(3, np.float32)).tobytes() == bytes.fromhex("0000803f000000")


def test_apr_q8_uses_one_scale_for_the_whole_tensor():
    x = np.array([[100.0, 1.0], [0.0, -50.0]], np.float32)
    raw = Q8.encode(x)
    assert raw.size == 4 + 4
    assert raw[:4].view("<f4")[0] == np.float32(100.0) / np.float32(127.0)


@pytest.mark.parametrize("codec", [Q4, Q8])
def test_empty_tensor_is_stored_as_zero_bytes(codec):
    raw = codec.encode(np.zeros((0, 5), np.float32))
    assert raw.size == 0 == codec.facts.nbytes((0, 5))
    assert codec.decode(raw, (0, 5)).shape == (0, 5)


@pytest.mark.parametrize("codec", [Q4, Q8])
def test_scalar_tensor_round_trips(codec):
    got = codec.decode(codec.encode(np.float32(-7.0)), ())
    assert got.shape == () and got == -7.0


@pytest.mark.parametrize("codec", [Q4, Q8])
@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_non_finite_input_is_refused_with_its_index(codec, bad):
    x = np.zeros((2, 40), np.float32)
    x[1, 7] = bad
    with pytest.raises(NonFiniteError) as err:
        codec.encode(x)
    assert err.value.index == (1, 7)


@pytest.mark.parametrize("codec", [Q4, Q8])
def test_decode_refuses_the_wrong_byte_count(codec):
    raw = codec.encode(np.ones(40, np.float32))
    with pytest.raises(ShapeError):
        codec.decode(raw[:-1], (40,))


@pytest.mark.parametrize("codec", [Q4, Q8])
def test_encode_and_decode_fill_caller_buffers(codec):
    x = np.linspace(-3, 3, 70, dtype=np.float32).reshape(7, 10)
    out = np.empty(codec.facts.nbytes(x.shape), np.uint8)
    assert codec.encode(x, out) is out
    dst = np.empty(x.shape, np.float32)
    assert codec.decode(out, x.shape, dst) is dst
    np.testing.assert_array_equal(dst, codec.decode(codec.encode(x), x.shape))


@pytest.mark.parametrize(
    ("code", "name"), [(128, "apr_q4"), (8, "apr_q4"), (129, "apr_q8"), (9, "apr_q8")]
)
def test_old_and_new_apr_codes_name_the_same_codec(code, name):
    assert by_apr_code(code).name == name


def test_encode_flattens_in_c_order():
    x = np.arange(64, dtype=np.float32).reshape(8, 8) - 32
    assert Q4.encode(x).tobytes() == Q4.encode(x.reshape(-1)).tobytes()
    assert Q4.encode(np.asfortranarray(x)).tobytes() == Q4.encode(x.reshape(-1)).tobytes()


@pytest.mark.parametrize("threads", [1, 2])
# AprQ8 gives a thread at least 64Ki values: 140,003 splits both codecs (and ends in a
# partial AprQ4 block)
@pytest.mark.parametrize("n", [31, 32, 100, 224, 250, 4099, 140_003])
def test_work_split_over_threads_gives_the_same_bytes_and_values(threads, n):
    x = np.resize(_inputs(n), n)
    want4, want8 = reference_q4(x), reference_q8(x)
    with kernel_threads(1):
        whole4, whole8 = Q4.decode(want4, (n,)), Q8.decode(want8, (n,))
    with kernel_threads(threads):
        assert Q4.encode(x).tobytes() == want4
        assert Q8.encode(x).tobytes() == want8
        np.testing.assert_array_equal(Q4.decode(want4, (n,)), whole4)
        np.testing.assert_array_equal(Q8.decode(want8, (n,)), whole8)


#: A fresh process whose first AprQ8 calls split the work over two threads (a first call
#: holds the lock that announces compilations while split_run's workers run).
FIRST_CALLS_SPLIT = """
import numpy as np
from bundler.codecs import get, kernel_threads
x = np.linspace(-1, 1, 4 << 16, dtype=np.float32).reshape(4, -1)
with kernel_threads(2):
    for name in ("apr_q8", "apr_q4"):
        codec = get(name)
        assert np.abs(codec.decode(codec.encode(x), x.shape) - x).max() < 0.15
print("done")
"""


def test_first_calls_that_split_the_work_over_threads_finish():
    done = subprocess.run([sys.executable, "-c", FIRST_CALLS_SPLIT], capture_output=True,
                          text=True, timeout=300)  # fmt: skip
    assert done.returncode == 0 and done.stdout == "done\n", done.stderr
