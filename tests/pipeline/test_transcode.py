"""TranscodeSource: chunked re-encoding through overlapping read and encode threads."""

from __future__ import annotations

import math
import re
import threading

import gguf
import numpy as np
import pytest
from gguf import GGMLQuantizationType as Q

from bundler.bundle import BytesSource, FileSource, Source, Tensor
from bundler.codecs import get, set_threads, thread_count
from bundler.errors import BundlerIOError, FormatError, NonFiniteError, UsageError
from bundler.transcode import (
    CHUNK_VALUES,
    IN_FLIGHT_BYTES,
    Buffers,
    TranscodeSource,
    chunk_values_for,
    ring_size,
)


def _stage_threads() -> list[threading.Thread]:
    names = ("bundler-read", "bundler-encode")
    return [t for t in threading.enumerate() if t.name.startswith(names)]


def _file_tensor(tmp_path, values: np.ndarray, codec: str = "f32") -> Tensor:
    raw = get(codec).encode(values).reshape(-1)
    path = tmp_path / "values.bin"
    path.write_bytes(b"\0" * 24 + raw.tobytes())  # an offset, as in a real container
    return Tensor("w", values.shape, codec, FileSource(path, 24, raw.size, get(codec)))


@pytest.mark.parametrize("source_codec", ["f32", "f16", "bf16", "f64", "q8_0"])
@pytest.mark.parametrize("chunk_values", [64, 96 * 7, 1 << 20])
def test_chunks_of_any_size_give_the_bytes_of_one_encode(tmp_path, source_codec, chunk_values):
    values = np.random.default_rng(0).standard_normal((3, 37, 64), dtype=np.float32)
    tensor = _file_tensor(tmp_path, values, source_codec)
    decoded = tensor.numpy()
    source = TranscodeSource(tensor, get("q4_1"), Buffers(), chunk_values=chunk_values)
    chunks = [c.copy() for c in source.iter_raw(1 << 20)]
    expected = gguf.quants.quantize(decoded, Q.Q4_1).reshape(-1)
    assert np.array_equal(np.concatenate(chunks), expected)
    assert len(chunks) == -(-111 // max(1, chunk_values // 64))
    assert _stage_threads() == []


def test_buffers_are_reused_across_tensors(tmp_path):
    values = np.ones((64, 64), np.float32)
    buffers = Buffers()
    first = [c.ctypes.data for c in TranscodeSource(
        Tensor.from_array("a", values), get("q8_0"), buffers, chunk_values=64 * 8
    ).iter_raw(0)]  # fmt: skip
    second = [c.ctypes.data for c in TranscodeSource(
        Tensor.from_array("b", values * 2), get("q8_0"), buffers, chunk_values=64 * 8
    ).iter_raw(0)]  # fmt: skip
    assert len(set(first)) <= buffers.ring == ring_size(thread_count())
    assert set(second) == set(first)


def test_leaving_early_stops_both_threads(tmp_path):
    values = np.zeros((4096, 64), np.float32)
    source = TranscodeSource(_file_tensor(tmp_path, values), get("q8_0"), chunk_values=64)
    stream = source.iter_raw(0)
    next(stream)
    assert _stage_threads()
    stream.close()
    assert _stage_threads() == []


def test_a_truncated_source_raises_a_format_error_in_the_caller(tmp_path):
    values = np.zeros((100, 64), np.float32)
    tensor = _file_tensor(tmp_path, values)
    with open(tensor.source.path, "r+b") as f:
        f.truncate(24 + 50 * 64 * 4 + 10)
    source = TranscodeSource(tensor, get("q8_0"), chunk_values=64 * 16)
    with pytest.raises(FormatError, match="file ends inside tensor data"):
        list(source.iter_raw(0))
    assert _stage_threads() == []


class _Failing(Source):
    def iter_raw(self, chunk_bytes):
        yield np.zeros(64 * 4, np.uint8)
        raise BundlerIOError("disk went away")


def test_an_error_of_any_source_reaches_the_caller():
    tensor = Tensor("w", (4, 64), "f32", _Failing())
    source = TranscodeSource(tensor, get("q8_0"), chunk_values=64)
    with pytest.raises(BundlerIOError, match="disk went away"):
        list(source.iter_raw(0))
    assert _stage_threads() == []


@pytest.mark.parametrize("workers", [1, 2, 8, 64])
def test_chunks_in_flight_stay_within_the_memory_budget_on_any_core_count(workers):
    values = chunk_values_for(workers)
    assert values <= CHUNK_VALUES
    assert values * 4 * ring_size(workers) <= IN_FLIGHT_BYTES


@pytest.mark.parametrize("threads", [1, None])
def test_set_threads_sets_how_many_chunks_are_encoded_at_once(tmp_path, threads):
    values = np.random.default_rng(5).standard_normal((4096, 64), np.float32)
    source = TranscodeSource(_file_tensor(tmp_path, values), get("q8_0"), chunk_values=64)
    try:
        limit = set_threads(threads)
        encoders = set()
        for chunk in source.iter_raw(0):
            encoders.update(t.name for t in _stage_threads() if t.name != "bundler-read")
            assert chunk.size
    finally:
        set_threads(None)
    assert 1 <= len(encoders) <= limit


@pytest.mark.parametrize("source_codec", ["f32", "f16", "f64", "q8_0", "array-f64"])
@pytest.mark.parametrize("target", ["q4_1", "q4_k"])
def test_rows_longer_than_a_chunk_stream_in_runs_of_whole_blocks(tmp_path, source_codec, target):
    values = np.random.default_rng(6).standard_normal((3, 2048), dtype=np.float32)
    if source_codec == "array-f64":
        tensor = Tensor.from_array("w", values.astype(np.float64), "f32")
    else:
        tensor = _file_tensor(tmp_path, values, source_codec)
    decoded = tensor.numpy().astype(np.float32)
    source = TranscodeSource(tensor, get(target), Buffers(), chunk_values=700)
    chunks = [c.copy() for c in source.iter_raw(0)]
    # a run is the most whole blocks of both codecs that fit in 700 values
    unit = math.lcm(tensor.codec.facts.block_size, get(target).facts.block_size)
    assert len(chunks) == -(-3 * 2048 // (700 // unit * unit)) > 3
    # the whole-tensor encode is checked against gguf and the C library in tests/codecs
    assert np.array_equal(np.concatenate(chunks), get(target).encode(decoded).reshape(-1))


def test_a_long_1d_tensor_streams_in_chunks(tmp_path):
    values = np.random.default_rng(7).standard_normal(64 * 100, dtype=np.float32)
    source = TranscodeSource(_file_tensor(tmp_path, values), get("q8_0"), chunk_values=640)
    chunks = [c.copy() for c in source.iter_raw(0)]
    assert len(chunks) == 10
    assert np.array_equal(np.concatenate(chunks), gguf.quants.quantize(values, Q.Q8_0))


@pytest.mark.parametrize(
    ("target", "shape", "at", "chunk_values"),
    [
        ("q4_0", (4, 4096), (2, 3001), 1000),  # a row longer than a chunk
        ("apr_q8", (8, 64), (6, 5), 128),  # found in the pass for the tensor-wide scale
    ],
)
def test_a_nan_is_named_at_its_index_in_the_tensor(tmp_path, target, shape, at, chunk_values):
    values = np.zeros(shape, np.float32)
    values[at] = np.inf
    source = TranscodeSource(_file_tensor(tmp_path, values), get(target), chunk_values=chunk_values)
    with pytest.raises(NonFiniteError, match=re.escape(f"index {at}")):
        list(source.iter_raw(0))


@pytest.mark.parametrize(("source_codec", "target"), [("f32", "apr_q4"), ("apr_q4", "q8_0")])
def test_aprender_q4_blocks_over_the_flat_tensor_stream_in_runs(tmp_path, source_codec, target):
    # 4 x 232 values: rows are not whole blocks of 32, and the last block is partial
    rows = 4 if target == "apr_q4" else 29
    values = np.random.default_rng(8).standard_normal((rows, 232 if rows == 4 else 32))
    tensor = _file_tensor(tmp_path, values.astype(np.float32), source_codec)
    source = TranscodeSource(tensor, get(target), Buffers(), chunk_values=100)
    chunks = [c.copy() for c in source.iter_raw(0)]
    assert len(chunks) == -(-values.size // 96) > 1
    whole = get(target).encode(tensor.numpy()).reshape(-1)
    assert np.array_equal(np.concatenate(chunks), whole)


@pytest.mark.parametrize("source_codec", ["f32", "f16", "array-f32"])
def test_aprender_q8_streams_its_tensor_wide_scale_then_the_codes(tmp_path, source_codec):
    values = np.random.default_rng(9).standard_normal((8, 64), np.float32)
    if source_codec == "array-f32":
        tensor = Tensor.from_array("w", values)
    else:
        tensor = _file_tensor(tmp_path, values, source_codec)
    source = TranscodeSource(tensor, get("apr_q8"), chunk_values=128)
    chunks = [c.copy() for c in source.iter_raw(0)]
    assert [c.size for c in chunks] == [4] + [128] * 4  # the scale, then the codes
    whole = get("apr_q8").encode(tensor.numpy()).reshape(-1)
    assert np.array_equal(np.concatenate(chunks), whole)


def test_aprender_q8_source_decodes_chunk_by_chunk_with_its_scale(tmp_path):
    values = np.random.default_rng(11).standard_normal((8, 64), np.float32)
    tensor = _file_tensor(tmp_path, values, "apr_q8")
    source = TranscodeSource(tensor, get("q8_0"), chunk_values=96)  # 96 = 3 Q8_0 blocks
    chunks = [c.copy() for c in source.iter_raw(0)]
    assert len(chunks) == -(-512 // 96)
    whole = gguf.quants.quantize(tensor.numpy(), Q.Q8_0).reshape(-1)
    assert np.array_equal(np.concatenate(chunks), whole)


def test_a_source_that_ends_early_is_a_usage_error_naming_the_tensor():
    short = BytesSource(np.zeros(64 * 64 * 2 - 6, np.uint8))  # f16 bytes, 3 values short
    tensor = Tensor("w", (64, 64), "f16", short)
    source = TranscodeSource(tensor, get("q8_0"), chunk_values=1000)
    with pytest.raises(UsageError, match="tensor 'w': its source ends 6 bytes short"):
        list(source.iter_raw(0))


@pytest.mark.parametrize("codec", ["q4_0", "q4_k"])
@pytest.mark.parametrize("chunk_values", [64, 256 * 5, 1 << 20])
@pytest.mark.parametrize("shape", [(6, 512), (3, 5, 256)])
def test_importance_weights_stream_per_expert_as_one_call_each(tmp_path, codec, chunk_values,
                                                                shape):  # fmt: skip
    # a 3-D tensor's experts each have their own weights (llama.cpp's ne2); chunks smaller
    # than an expert, or than a row, must never mix two experts' rows or weights
    rng = np.random.default_rng(7)
    values = rng.standard_normal(shape, dtype=np.float32)
    experts = shape[0] if len(shape) == 3 else 1
    weights = rng.random(experts * shape[-1], dtype=np.float32) + 0.1
    target = get(codec)
    rows = values.reshape(experts, -1, shape[-1])
    want = np.concatenate([
        target.encode(rows[e], importance=weights[e * shape[-1] : (e + 1) * shape[-1]])
        .reshape(-1) for e in range(experts)
    ])  # fmt: skip
    tensor = _file_tensor(tmp_path, values)
    source = TranscodeSource(tensor, target, chunk_values=chunk_values, importance=weights)
    got = np.concatenate([c.copy() for c in source.iter_raw(1 << 20)])
    assert got.tobytes() == want.tobytes()
    assert source.raw().tobytes() == want.tobytes()
    assert got.tobytes() != target.encode(values).reshape(-1).tobytes()  # the weights count


def test_importance_weights_are_dropped_for_a_codec_that_has_no_weighted_quantizer(tmp_path):
    values = np.random.default_rng(1).standard_normal((4, 64), dtype=np.float32)
    source = TranscodeSource(_file_tensor(tmp_path, values), get("f16"),
                             importance=np.ones(64, np.float32))  # fmt: skip
    assert source.importance is None
    assert source.raw().tobytes() == get("f16").encode(values).tobytes()
