"""Reading importance matrices in both of llama-imatrix's forms: the weights llama-quantize
derives from them, and typed errors (file, offset, problem) for every broken file, with
memory bounded by the file whatever its counts claim."""

from __future__ import annotations

import struct
import tracemalloc

import numpy as np
import pytest
from imatrix_files import write_dat, write_gguf

from bundler.errors import FormatError, TruncatedError, UsageError
from bundler.importance import ImportanceMatrix, load, read


def test_gguf_weights_divide_the_sums_by_the_rounded_count_per_expert(tmp_path):
    sums = np.arange(1, 13, dtype=np.float32).reshape(3, 4) * 3
    # 2.5 rounds away from zero to 3 (lround); an expert that saw nothing weighs 1
    path = write_gguf(tmp_path / "m.gguf", {"blk.0.ffn_up.weight": (sums, [2.5, 0.0, 6.0])})
    m = read(path)
    want = np.concatenate([sums[0] / np.float32(3), np.ones(4, np.float32), sums[2] / 6])
    assert m.entries["blk.0.ffn_up.weight"].dtype == np.float32
    assert m.entries["blk.0.ffn_up.weight"].tobytes() == want.astype(np.float32).tobytes()
    assert (m.datasets, m.chunk_count, m.chunk_size, m.legacy) == (
        ("calibration.txt",), 4, 128, False,
    )  # fmt: skip


def test_dat_weights_divide_by_the_call_count_unless_it_is_not_positive(tmp_path):
    values = np.array([3.0, 6.0, 9.0, 1.5], np.float32)
    path = write_dat(tmp_path / "m.dat", {"a.weight": (values, 3), "b.weight": (values, 0)})
    m = read(path)
    assert m.entries["a.weight"].tobytes() == (values / np.float32(3)).tobytes()
    assert m.entries["b.weight"].tobytes() == values.tobytes()
    assert (m.datasets, m.chunk_count, m.legacy) == (("calibration.txt",), 4, True)


@pytest.mark.parametrize(("chunks", "dataset"), [(None, None), (7, None), (7, "")])
def test_dat_trailer_is_optional(tmp_path, chunks, dataset):
    path = write_dat(tmp_path / "m.dat", {"a.weight": ([1.0], 1)}, chunks, dataset)
    m = read(path)
    assert (m.chunk_count, m.datasets) == (chunks or 0, ())


def test_the_form_is_told_by_the_first_bytes_not_the_extension(tmp_path):
    gguf_named_dat = write_gguf(tmp_path / "m.dat", {"a.weight": ([[2.0]], [1.0])})
    dat_named_gguf = write_dat(tmp_path / "m.gguf", {"a.weight": ([2.0], 1)})
    assert not read(gguf_named_dat).legacy
    assert read(dat_named_gguf).legacy


# ------------------------------------------------------------------- broken files


def _gguf_bytes(tmp_path) -> bytes:
    entries = {"blk.0.attn_q.weight": (np.ones((1, 64), np.float32), [8.0])}
    return write_gguf(tmp_path / "whole.gguf", entries).read_bytes()


def _dat_bytes(tmp_path) -> bytes:
    entries = {"blk.0.attn_q.weight": (np.ones(64, np.float32), 2)}
    return write_dat(tmp_path / "whole.dat", entries, 4, "calibration.txt").read_bytes()


@pytest.mark.parametrize("form", ["gguf", "dat"])
@pytest.mark.parametrize("keep", [0.0, 0.1, 0.5, 0.9, "last value"])
def test_a_truncated_matrix_is_a_truncated_error_naming_file_and_offset(tmp_path, form, keep):
    whole = _gguf_bytes(tmp_path) if form == "gguf" else _dat_bytes(tmp_path)
    path = tmp_path / f"cut.{form}"
    # the last value: 2 bytes short of it (GGUF: its 28 padding bytes cut too, which alone
    # would be harmless)
    end = len(whole) - (30 if form == "gguf" else 2) if keep == "last value" else len(whole) * keep
    path.write_bytes(whole[: int(end)])
    with pytest.raises(TruncatedError) as err:
        load(path)
    assert err.value.path == str(path) and err.value.offset is not None


@pytest.mark.parametrize(
    ("case", "problem"),
    [
        ("entries", "entries cannot fit"),
        ("name_length", "name of entry 1"),
        ("negative_name", "name length of -5"),
        ("values", "values of"),
        ("no_values", "has 0 values"),
        ("no_entries", "entry count is 0"),
        ("dataset_length", "dataset name needs"),
        ("half_trailer", "chunk count needs"),
    ],
)
def test_lying_dat_counts_fail_before_allocating(tmp_path, case, problem):
    name = b"blk.0.attn_q.weight"
    entry = struct.pack("<i", len(name)) + name + struct.pack("<ii", 1, 4) + bytes(16)
    raw = {
        "entries": struct.pack("<i", 2**31 - 1) + entry,
        "name_length": struct.pack("<ii", 1, 2**31 - 1) + bytes(16),
        "negative_name": struct.pack("<ii", 1, -5) + bytes(16),
        "values": struct.pack("<ii", 1, len(name)) + name + struct.pack("<ii", 1, 2**31 - 1),
        "no_values": struct.pack("<ii", 1, len(name)) + name + struct.pack("<ii", 1, 0),
        "no_entries": struct.pack("<i", 0) + bytes(16),
        "dataset_length": struct.pack("<i", 1) + entry + struct.pack("<ii", 4, 2**31 - 1),
        "half_trailer": struct.pack("<i", 1) + entry + b"\x04\x00",
    }[case]
    path = tmp_path / "lying.dat"
    path.write_bytes(raw)
    tracemalloc.start()
    try:
        with pytest.raises(FormatError, match=problem) as err:
            read(path)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 1 << 20
    assert err.value.path == str(path) and err.value.offset is not None


def test_gguf_matrix_without_its_metadata_is_refused_as_llama_quantize_does(tmp_path):
    path = write_gguf(tmp_path / "m.gguf", {"a.weight": ([[1.0]], [1.0])}, metadata=False)
    with pytest.raises(FormatError, match="missing importance matrix metadata"):
        read(path)


def test_gguf_sums_without_counts_are_refused(tmp_path):
    import gguf

    w = gguf.GGUFWriter(str(tmp_path / "m.gguf"), arch=None)
    w.add_array("imatrix.datasets", ["x"])
    w.add_uint32("imatrix.chunk_count", 1)
    w.add_uint32("imatrix.chunk_size", 1)
    w.add_tensor("a.weight.in_sum2", np.ones((1, 32), np.float32))
    w.add_tensor("b.weight.in_sum2", np.ones((1, 32), np.float16))
    w.add_tensor("b.weight.counts", np.ones((1, 1), np.float32))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    with pytest.raises(FormatError, match=r"'a.weight' has no 'a.weight.counts'") as err:
        read(tmp_path / "m.gguf")
    assert err.value.offset is not None


def test_gguf_sums_that_do_not_split_among_the_counts_are_refused(tmp_path):
    path = write_gguf(tmp_path / "m.gguf", {"a.weight": (np.ones((1, 5)), [1.0, 1.0])})
    with pytest.raises(FormatError, match="5 sums cannot be split among 2 counts"):
        read(path)


@pytest.mark.parametrize("bad", [np.nan, np.inf])
@pytest.mark.parametrize("form", ["gguf", "dat"])
def test_a_non_finite_weight_is_refused_naming_the_entry(tmp_path, bad, form):
    values = np.array([1.0, bad, 2.0, 3.0], np.float32)
    if form == "gguf":
        path = write_gguf(tmp_path / "m.gguf", {"x.weight": (values[None], [1.0])})
    else:
        path = write_dat(tmp_path / "m.dat", {"x.weight": (values, 1)})
    with pytest.raises(FormatError, match=r"'x.weight' holds (nan|inf) at index 1"):
        load(path)


def test_include_and_exclude_together_is_a_usage_error_before_reading(tmp_path):
    with pytest.raises(UsageError, match="cannot be used together"):
        load(tmp_path / "does-not-exist.gguf", include=["attn"], exclude=["ffn"])


def test_include_and_exclude_match_substrings_of_the_entry_names():
    m = ImportanceMatrix.from_mapping(
        {n: [1.0] for n in ("blk.0.attn_q.weight", "blk.0.ffn_up.weight", "output.weight")}
    )
    assert sorted(m.selected(include=["attn", "output"]).entries) == [
        "blk.0.attn_q.weight", "output.weight",
    ]  # fmt: skip
    assert sorted(m.selected(exclude=["blk.0."]).entries) == ["output.weight"]


@pytest.mark.parametrize("form", ["gguf", "dat"])
def test_any_damage_is_a_format_error_or_a_valid_matrix(tmp_path, form):
    # cuts and overwritten bytes anywhere: never another exception, never a crash
    from hypothesis import HealthCheck, given, settings
    from hypothesis import strategies as st

    whole = _gguf_bytes(tmp_path) if form == "gguf" else _dat_bytes(tmp_path)
    path = tmp_path / f"damaged.{form}"

    @settings(max_examples=150, deadline=None, suppress_health_check=list(HealthCheck))
    @given(
        cut=st.integers(0, len(whole)),
        patches=st.lists(
            st.tuples(st.integers(0, len(whole) - 1), st.binary(min_size=1, max_size=8)),
            max_size=4,
        ),
    )
    def damaged(cut, patches):
        raw = bytearray(whole)
        for at, data in patches:
            raw[at : at + len(data)] = data
        path.write_bytes(bytes(raw[: cut + 1]))
        try:
            matrix = load(path)
        except FormatError as exc:
            assert exc.path == str(path)
            return
        assert all(np.isfinite(w).all() and w.dtype == np.float32 for w in matrix.entries.values())

    damaged()
