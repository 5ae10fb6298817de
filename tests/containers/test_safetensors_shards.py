"""Sharded checkpoints: cut, names, index JSON, and reading back through the index, the
directory or `bundler.open`."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest
from safetensors import safe_open

from bundler.bundle import Bundle, Metadata, Tensor
from bundler.containers import safetensors as stf
from bundler.containers.safetensors import shards as shards
from bundler.errors import FormatError, OutputExistsError, UsageError


def _bundle(sizes=(40, 40, 40, 100, 8), typed=False) -> Bundle:
    md = Metadata({"format": "pt"})
    if typed:
        md["layers"] = 2
    tensors = [
        Tensor.from_array(f"t{i}", np.arange(n // 4, dtype=np.float32) + i)
        for i, n in enumerate(sizes)
    ]
    return Bundle(md, tensors)


def _same(a: Bundle, b: Bundle) -> None:
    assert a.metadata == b.metadata
    assert [(t.name, t.codec, t.shape) for t in a.tensors.values()] == [
        (t.name, t.codec, t.shape) for t in b.tensors.values()
    ]
    for name, t in a.tensors.items():
        assert t.raw().tobytes() == b.tensors[name].raw().tobytes()


def test_cut_closes_a_shard_before_it_overflows_and_isolates_large_tensors():
    b = _bundle((40, 40, 40, 100, 8, 8))
    groups = shards.plan(list(b.tensors.values()), 90)
    assert [[t.name for t in g] for g in groups] == [["t0", "t1"], ["t2"], ["t3"], ["t4", "t5"]]


def test_a_large_first_or_last_tensor_makes_no_empty_shard():
    b = _bundle((100, 8, 100))
    groups = shards.plan(list(b.tensors.values()), 50)
    assert [[t.name for t in g] for g in groups] == [["t0"], ["t1"], ["t2"]]


def test_sharded_write_names_files_and_writes_the_index(tmp_path):
    bundle = _bundle()
    stf.write(bundle, tmp_path / "model.safetensors", max_shard_size=90)
    names = [f"model-0000{i}-of-00004.safetensors" for i in range(1, 5)]
    assert sorted(os.listdir(tmp_path)) == sorted([*names, "model.safetensors.index.json"])
    text = (tmp_path / "model.safetensors.index.json").read_text()
    index = {
        "metadata": {"total_size": 228},
        "weight_map": {
            "t0": names[0],
            "t1": names[0],
            "t2": names[1],
            "t3": names[2],
            "t4": names[3],
        },
    }
    assert text == json.dumps(index, indent=2, sort_keys=True) + "\n"
    assert text.startswith('{\n  "metadata": {\n    "total_size": 228\n  },\n  "weight_map": {\n')
    for name in names:
        with safe_open(str(tmp_path / name), framework="numpy") as f:
            assert f.metadata() == {"format": "pt"}
            for key in f.keys():  # noqa: SIM118 (a safe_open handle, not a dict)
                assert np.array_equal(f.get_tensor(key), bundle.tensors[key].numpy())


@pytest.mark.parametrize("typed", [False, True])
@pytest.mark.parametrize("open_as", ["index", "directory"])
def test_sharded_round_trip_is_byte_identical(typed, open_as, tmp_path):
    bundle = _bundle(typed=typed)
    first = tmp_path / "a"
    first.mkdir()
    stf.write(bundle, first, max_shard_size=90)
    target = first / "model.safetensors.index.json" if open_as == "index" else first
    back = stf.read(target)
    _same(bundle, back)
    second = tmp_path / "b"
    second.mkdir()
    stf.write(back, second / "model.safetensors", max_shard_size=90)
    assert sorted(os.listdir(first)) == sorted(os.listdir(second))
    for name in os.listdir(first):
        assert (first / name).read_bytes() == (second / name).read_bytes(), name


def test_bundler_open_takes_the_index_and_the_directory(tmp_path):
    import bundler

    bundle = _bundle()
    stf.write(bundle, tmp_path / "model.safetensors", max_shard_size=90)
    for target in (tmp_path, tmp_path / "model.safetensors.index.json"):
        opened = bundler.open(target)
        assert opened.format == "safetensors"
        _same(bundle, opened)


def test_a_shard_opened_alone_holds_its_own_tensors(tmp_path):
    stf.write(_bundle(typed=True), tmp_path / "m.safetensors", max_shard_size=90)
    part = stf.read(tmp_path / "m-00001-of-00004.safetensors")
    assert list(part.tensors) == ["t0", "t1"]
    assert part.metadata["layers"] == 2


def test_one_shard_means_one_file_and_no_index(tmp_path):
    stf.write(_bundle(), tmp_path / "model.safetensors")
    assert os.listdir(tmp_path) == ["model.safetensors"]


def test_a_directory_with_one_file_opens_that_file(tmp_path):
    stf.write(_bundle(), tmp_path / "weights.safetensors")
    _same(_bundle(), stf.read(tmp_path))


def test_refuses_to_overwrite_shards_without_force(tmp_path):
    stf.write(_bundle(), tmp_path / "model.safetensors", max_shard_size=90)
    with pytest.raises(OutputExistsError):
        stf.write(_bundle(), tmp_path / "model.safetensors", max_shard_size=90, force=False)


@pytest.mark.parametrize("size", [0, -1, 1.5, "5GB", True])
def test_max_shard_size_must_be_a_positive_byte_count(size, tmp_path):
    with pytest.raises(UsageError):
        stf.write(_bundle(), tmp_path / "model.safetensors", max_shard_size=size)


def _edit_index(tmp_path, edit) -> str:
    """Write a sharded bundle, then change its index: `edit` is a function of the parsed
    index, or the replacement text."""
    stf.write(_bundle(), tmp_path / "model.safetensors", max_shard_size=90)
    path = tmp_path / "model.safetensors.index.json"
    if isinstance(edit, str):
        path.write_text(edit)
    else:
        index = json.loads(path.read_text())
        edit(index)
        path.write_text(json.dumps(index))
    return str(path)


@pytest.mark.parametrize(
    ("edit", "problem"),
    [
        (lambda ix: ix["weight_map"].update(t0="nowhere.safetensors"), "is missing"),
        (lambda ix: ix["weight_map"].update(t0="../x.safetensors"), "not a file name"),
        (lambda ix: ix["weight_map"].update(t0=3), "not a file name"),
        (lambda ix: ix["weight_map"].pop("t1"), "the index does not list"),
        (lambda ix: ix["weight_map"].update(zz="model-00001-of-00004.safetensors"), "lacks"),
        (lambda ix: ix.pop("weight_map"), "'weight_map' object"),
        (lambda ix: ix.update(metadata=[]), "'metadata' must be an object"),
        ('{"weight_map": {', "not valid JSON"),
        ("[1]", "'weight_map' object"),
        ('{"weight_map": {"a": "b"}} x', "not valid JSON"),
        ('{"weight_map": {}}', "lists no tensors"),
        (b"{\xff}".decode("latin-1"), "not valid"),
    ],
)
def test_bad_index_is_a_format_error(edit, problem, tmp_path):
    path = _edit_index(tmp_path, edit)
    with pytest.raises(FormatError) as err:
        stf.read(path)
    assert problem in err.value.problem


def test_typed_metadata_must_agree_across_shards(tmp_path):
    stf.write(_bundle(typed=True), tmp_path / "model.safetensors", max_shard_size=90)
    other = tmp_path / "other"
    other.mkdir()
    changed = _bundle(typed=True)
    changed.metadata["layers"] = 3
    stf.write(changed, other / "model.safetensors", max_shard_size=90)
    os.replace(
        other / "model-00002-of-00004.safetensors", tmp_path / "model-00002-of-00004.safetensors"
    )
    with pytest.raises(FormatError, match="differs from the first shard"):
        stf.read(tmp_path)


def test_unknown_write_options_are_usage_errors(tmp_path):
    with pytest.raises(UsageError, match="max_shard_sise"):
        stf.write(_bundle(), tmp_path / "model.safetensors", max_shard_sise=90)


def test_a_sharded_checkpoint_keeps_its_shards_when_no_cut_is_given(tmp_path):
    """Shards cut by another tool (here: a different grouping) are kept on rewrite."""
    bundle = _bundle()
    groups = [["t0"], ["t1", "t2"], ["t3", "t4"]]
    names = shards.shard_names("model", 3)
    src = tmp_path / "src"
    src.mkdir()
    for name, group in zip(names, groups, strict=True):
        part = Bundle(bundle.metadata, [bundle.tensors[n] for n in group])
        stf.write(part, src / name)
    index = shards.index_text([[bundle.tensors[n] for n in g] for g in groups], names)
    (src / "model.safetensors.index.json").write_text(index)
    out = tmp_path / "out"
    out.mkdir()
    stf.write(stf.read(src), out)
    assert _listing_bytes(out) == _listing_bytes(src)
    again = tmp_path / "again"
    again.mkdir()
    stf.write(stf.read(src), again, max_shard_size=10_000)
    assert os.listdir(again) == ["model.safetensors"]


def _listing_bytes(path):
    return {p.name: p.read_bytes() for p in sorted(path.iterdir())}
