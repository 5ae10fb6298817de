"""F16 and BF16 against the C library, bit pattern by bit pattern: every float32 class
(normals, subnormals, the half overflow and underflow edges, infinities, NaNs with any
payload and sign) encodes to ggml's bytes and decodes to ggml's floats, through both of
bundler's paths (the compiled kernels from `floats.COMPILED_FROM` values, numpy below),
on one thread and on several.
"""

from __future__ import annotations

import os

import numpy as np
import pytest

from bundler.codecs import floats, get, set_threads
from tools.reference import assets

pytestmark = pytest.mark.oracle_c


@pytest.fixture(scope="module")
def ggml_c():
    from tools.reference import ggml_c

    try:
        ggml_c.library()
    except (ggml_c.ToolchainMissing, ggml_c.BuildFailed, assets.AssetUnavailable) as exc:
        if os.environ.get("CI") == "true":
            raise
        pytest.skip(f"C reference library unavailable: {exc}")
    return ggml_c


def _patterns() -> np.ndarray:
    """Float32 bit patterns: 4M random ones, and every pattern around the edges where a
    half turns subnormal, zero, overflows, and where float32 turns infinite or NaN."""
    rng = np.random.default_rng(19)
    parts = [rng.integers(0, 2**32, size=1 << 22, dtype=np.uint32)]
    for exponent in (0x33, 0x38, 0x47, 0x7F, 0x00):
        at = np.uint32(exponent << 23)
        parts.append(np.arange(max(0, int(at) - (1 << 17)), int(at) + (1 << 17), dtype=np.uint32))
    bits = np.concatenate(parts)
    bits = np.concatenate([bits, bits ^ np.uint32(0x80000000)])  # both signs
    rows = -(-bits.size // 4096)
    bits = np.resize(bits, rows * 4096)
    return bits.reshape(rows, 4096)


@pytest.fixture(scope="module")
def patterns() -> np.ndarray:
    return _patterns()


def _rows(x: np.ndarray, compiled: bool) -> list[np.ndarray]:
    """`x` whole (compiled path) or in pieces below COMPILED_FROM values (numpy path)."""
    if compiled:
        assert x.size >= floats.COMPILED_FROM
        return [x]
    step = max(1, floats.COMPILED_FROM // x.shape[1] // 2)
    return [x[i : i + step] for i in range(0, x.shape[0], step)]


@pytest.mark.parametrize("threads", [1, 2])
@pytest.mark.parametrize("compiled", [True, False], ids=["compiled", "numpy"])
@pytest.mark.parametrize("name", ["f16", "bf16"])
def test_every_float32_class_encodes_and_decodes_as_ggml(ggml_c, patterns, name, compiled, threads):
    x = patterns.view(np.float32)
    codec = get(name)
    set_threads(min(threads, os.cpu_count() or 1))
    try:
        ours = np.concatenate([codec.encode(part) for part in _rows(x, compiled)])
        theirs = ggml_c.quantize(name, x).reshape(ours.shape)
        differ = np.flatnonzero(ours.view(np.uint16) != theirs.view(np.uint16))
        bad = patterns.reshape(-1)[differ[:5]]
        assert differ.size == 0, f"{differ.size} values differ, first inputs {bad}"
        decoded = np.concatenate(
            [codec.decode(part, (part.shape[0], x.shape[1])) for part in _rows(theirs, compiled)]
        )
        expected = ggml_c.dequantize(name, theirs, x.shape)
        np.testing.assert_array_equal(decoded.view(np.uint32), expected.view(np.uint32))
    finally:
        set_threads(None)


@pytest.mark.parametrize("name", ["f16", "bf16"])
def test_read_only_and_non_float32_inputs_take_the_numpy_path_with_the_same_bytes(name):
    x = np.random.default_rng(5).standard_normal((64, 8192)).astype(np.float32)
    x[0, :4] = [np.nan, -np.nan, np.inf, 70000.0]
    codec = get(name)
    want = codec.encode(x)
    x.setflags(write=False)
    np.testing.assert_array_equal(codec.encode(x), want)  # a memory-mapped chunk
    np.testing.assert_array_equal(codec.encode(x[:2]), want[:2])  # under COMPILED_FROM
    wide = x.astype(np.float64) * (1 + 2**-30)  # float64 is taken as its float32 values
    np.testing.assert_array_equal(codec.encode(wide), codec.encode(wide.astype(np.float32)))
