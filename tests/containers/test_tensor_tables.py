"""A read file's tensor table is held as columns: opening and listing a header of many
tensors costs a small constant per header MiB (tracemalloc peak, measured in a fresh
process by `bundler bench hostile`'s probe), and the bundle's tensors still behave as an
ordered mapping of `Tensor`s."""

from __future__ import annotations

import numpy as np
import pytest

import bundler
from bundler.bench import hostile
from bundler.bundle import Bundle, Tensor, Tensors

#: The stated worst case of formats/gguf.md and formats/safetensors.md for these headers
#: (the readers before the tables took 8 to 14 MiB per header MiB).
PEAK_MIB_PER_HEADER_MIB = 4.0
TENSORS = 100_000


@pytest.mark.parametrize("case", ["gguf-zero-tensors", "safetensors-zero-tensors"])
def test_listing_a_hundred_thousand_tensors_costs_a_bounded_peak_per_header_mib(case):
    _, full, _ = hostile.CASES[case]
    (row,) = hostile.run([case], scale=TENSORS / full)
    assert row["outcome"] == "read", row
    assert row["message"].startswith(f"{TENSORS} tensors"), row
    assert row["file_bytes"] > 3 << 20
    assert row["peak_mib_per_mib"] < PEAK_MIB_PER_HEADER_MIB, row


@pytest.fixture(scope="module")
def written(tmp_path_factory) -> dict[str, str]:
    rng = np.random.default_rng(0)
    source = Bundle(
        {"general.architecture": "llama"},
        [
            Tensor.from_array("b.weight", rng.standard_normal((4, 32)).astype(np.float32)),
            Tensor.from_array("a.weight", rng.standard_normal(8).astype(np.float16)),
            Tensor.from_array("c.bias", np.arange(3, dtype=np.int32)),
        ],
    )
    out = {}
    for ext in ("gguf", "safetensors"):
        path = str(tmp_path_factory.mktemp(ext) / f"m.{ext}")
        source.save(path)
        out[ext] = path
    return out


@pytest.mark.parametrize("ext", ["gguf", "safetensors"])
def test_a_read_bundle_looks_tensors_up_by_name_from_its_table(written, ext):
    b = bundler.open(written[ext])
    assert isinstance(b.tensors, Tensors) and b.tensors.table is not None
    names = list(b.tensors)
    assert sorted(names) == ["a.weight", "b.weight", "c.bias"]
    for name in names:
        t = b.tensors[name]
        assert t.name == name and name in b.tensors
    assert "missing" not in b.tensors and b.tensors.get("missing") is None
    with pytest.raises(KeyError):
        b.tensors["missing"]
    assert [t.name for t in b.tensors.values()] == names
    assert [n for n, _ in b.tensors.items()] == names
    assert b.tensors["b.weight"].shape == (4, 32)
    assert b.tensors["c.bias"].numpy().tolist() == [0, 1, 2]
    assert len(b.tensors) == 3


@pytest.mark.parametrize("ext", ["gguf", "safetensors"])
def test_changing_a_read_bundles_tensors_turns_the_table_into_a_dict(written, ext):
    b = bundler.open(written[ext])
    kept = b.tensors["a.weight"].numpy()
    b.add(Tensor.from_array("d", np.ones(2, np.float32)))
    del b.tensors["b.weight"]
    assert b.tensors.table is None
    before = list(bundler.open(written[ext]).tensors)
    assert list(b.tensors) == [n for n in before if n != "b.weight"] + ["d"]
    assert np.array_equal(b.tensors["a.weight"].numpy(), kept)
