"""Every codec with kernels and a GGML id against the C library (ggml-base built from the
llama-cpp-python sources): encoded bytes equal `ggml_quantize_chunk(type, ..., NULL)` and
decoded floats equal the library's `to_float`, bit for bit.

Without cmake or a compiler the tests skip saying what to install; in CI (CI=true) they run
or fail.
"""

from __future__ import annotations

import importlib.util
import os

import edge_cases
import gguf
import numpy as np
import pytest
from gguf import GGMLQuantizationType as T

from bundler.codecs import registry
from tools.reference import assets

pytestmark = pytest.mark.oracle_c

IN_CI = os.environ.get("CI") == "true"


@pytest.fixture(scope="module")
def ggml_c():
    """The ggml_c module with its library built and loaded."""
    from tools.reference import ggml_c

    try:
        ggml_c.library()
    except (ggml_c.ToolchainMissing, ggml_c.BuildFailed, assets.AssetUnavailable) as exc:
        if IN_CI:
            raise
        pytest.skip(f"C reference library unavailable: {exc}")
    return ggml_c


def _oracle_codecs() -> list[str]:
    """Every codec with kernels and a GGML id."""
    return [
        c.name for c in registry.all_codecs() if c.facts.kernels and c.facts.ggml_id is not None
    ]


def _codec(name: str) -> registry.Codec:
    codec = registry.get(name)
    if importlib.util.find_spec(codec.facts.kernels) is None:
        pytest.skip(f"{codec.facts.kernels} is not in this tree yet")
    return codec


def _inputs(block: int) -> dict[str, np.ndarray]:
    """Random and edge-case inputs whose rows are whole blocks (and whole 256 super-blocks)."""
    rng = np.random.default_rng(66)
    cols = max(block, 256)
    inputs = {
        "normal": rng.standard_normal((64, 1024)) * 0.02,
        "uniform": rng.uniform(-3, 3, (16, 1024)),
        "heavy_tails": rng.standard_t(2, (16, 1024)),
        "bf16_rounded": edge_cases.bf16_rounded(16, 1024),
        "tied_magnitudes": edge_cases.tied_magnitudes(cols),
        "signed_zero_extremes": edge_cases.signed_zero_extremes(cols),
        "overflowing_inverses": edge_cases.overflowing_inverses(cols),
        "row_scales": rng.standard_normal((8, cols)) * np.logspace(-30, 30, 8)[:, None],
        "zero_and_constant": np.stack(
            [np.zeros(cols), np.full(cols, 0.5), np.full(cols, -3.25), np.full(cols, -0.0)]
        ),
    }
    return {k: np.ascontiguousarray(v, dtype=np.float32) for k, v in inputs.items()}


def _bits(a: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(a, dtype=np.float32).view(np.uint32)


@pytest.mark.parametrize("name", _oracle_codecs())
def test_encode_equals_ggml_quantize_chunk_and_decode_equals_to_float(ggml_c, name):
    codec = _codec(name)
    if codec.facts.requires_importance:
        pytest.skip(f"ggml quantizes {name} only with an imatrix (test_weighted_oracle)")
    if not ggml_c.can_quantize(name):
        pytest.skip(f"ggml has no reference encoder for {name} (an integer or f64 element type)")
    for case, x in _inputs(codec.facts.block_size).items():
        x = edge_cases.c_safe(name, x)
        ours = codec.encode(x)
        theirs = ggml_c.quantize(name, x)
        differ = np.flatnonzero(ours.reshape(-1) != theirs.reshape(-1))
        assert differ.size == 0, f"{name} {case}: {differ.size} bytes differ, first {differ[:5]}"
        if ggml_c.can_dequantize(name):
            decoded = codec.decode(theirs, x.shape)
            expected = ggml_c.dequantize(name, theirs, x.shape)
            np.testing.assert_array_equal(_bits(decoded), _bits(expected), err_msg=case)


@pytest.mark.parametrize("name", ["q4_0", "q4_1", "q5_0", "q5_1", "q8_0"])
def test_c_build_has_no_fused_multiply_add(ggml_c, name):
    # bf16-rounded weights hit the blocks where an FMA build of x*id + 8.5 rounds
    # differently; the gguf package (numpy, unfused) matches the unfused reference.
    x = edge_cases.bf16_rounded(256, 4096)
    expected = np.asarray(gguf.quants.quantize(x, T[name.upper()])).view(np.uint8)
    assert np.array_equal(ggml_c.quantize(name, x), expected.reshape(len(x), -1))


@pytest.mark.parametrize("name", ["q4_k", "q8_0"])
def test_threaded_c_calls_give_the_single_thread_bytes(ggml_c, name):
    x = edge_cases.normal_weights(37, 1024)
    one = ggml_c.quantize(name, x)
    assert np.array_equal(ggml_c.quantize(name, x, threads=3), one)
    np.testing.assert_array_equal(
        _bits(ggml_c.dequantize(name, one, x.shape, threads=2)),
        _bits(ggml_c.dequantize(name, one, x.shape)),
    )


@pytest.mark.parametrize("name", [f.name for f in registry.TABLE if f.ggml_id is not None])
def test_block_size_bytes_and_name_agree_with_the_c_type_traits(ggml_c, name):
    facts = registry.get(name).facts
    traits = ggml_c.library().ggml_get_type_traits(facts.ggml_id).contents
    assert (facts.block_size, facts.type_size) == (traits.blck_size, traits.type_size)
    assert traits.type_name.decode().lower() == name


def test_types_the_c_library_cannot_encode_are_refused_not_crashed(ggml_c):
    with pytest.raises(ValueError, match="cannot quantize"):
        ggml_c.quantize("iq2_xxs", np.zeros((1, 256), np.float32))
    with pytest.raises(ValueError, match="multiple of 256"):
        ggml_c.quantize("q4_k", np.zeros((1, 100), np.float32))


def test_a_second_build_call_reuses_the_cached_library(ggml_c):
    path = ggml_c.library_path()
    assert path.is_relative_to(assets.cache_dir())
    assert ggml_c.BUILD_TAG in str(path)
    assert ggml_c.library_path(build=False) == path


def test_a_missing_toolchain_is_reported_with_what_to_install(monkeypatch):
    from tools.reference import ggml_c as module

    monkeypatch.setattr(module.shutil, "which", lambda tool: None)
    monkeypatch.delenv("CC", raising=False)
    monkeypatch.delenv("CXX", raising=False)
    with pytest.raises(module.ToolchainMissing, match=r"cmake.*C compiler.*apt-get install"):
        module._check_toolchain()


def test_loading_without_building_refuses_an_empty_cache(monkeypatch, tmp_path):
    from tools.reference import ggml_c as module

    monkeypatch.setenv("BUNDLER_CACHE", str(tmp_path))
    with pytest.raises(module.NotBuilt, match=r"python -m tools\.reference\.ggml_c"):
        module.library_path(build=False)
    assert not any(tmp_path.rglob("*.so"))
