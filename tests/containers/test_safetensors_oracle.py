"""The `safetensors` package as an independent oracle: it reads what we write, we read what
it writes, tensor for tensor."""

from __future__ import annotations

import ml_dtypes  # noqa: F401  (safe_open needs it for BF16)
import numpy as np
import pytest
import safetensors
from safetensors import safe_open
from safetensors.numpy import save as reference_save

from bundler.bundle import Bundle, Tensor
from bundler.codecs import TABLE
from bundler.containers import safetensors as stf

#: Every SafeTensors dtype and the numpy dtype of one element (None: packed F4/F6).
DTYPES = {f.safetensors_dtype: f for f in TABLE if f.safetensors_dtype}
#: numpy cannot name the float8 types, so `safe_open(framework="numpy")` refuses them.
SAFE_OPEN_DTYPES = {"F8_E5M2", "F8_E4M3", "F8_E8M0", "F8_E4M3FNUZ", "F8_E5M2FNUZ"}


def _tensor_of(dtype: str, shape: tuple[int, ...], seed: int) -> Tensor:
    facts = DTYPES[dtype]
    nbytes = facts.nbytes(shape)
    raw = np.random.default_rng(seed).integers(0, 256, nbytes, dtype=np.uint8)
    if dtype == "BOOL":
        raw &= 1
    return Tensor.from_raw(f"t.{dtype.lower()}", shape, facts.name, raw)


@pytest.mark.parametrize(
    ("dtype", "shape"),
    [
        (dtype, shape)
        for dtype in sorted(DTYPES)
        for shape in [(), (0,), (3, 4), (2, 0, 4), (1, 2, 4)]
        if shape or DTYPES[dtype].block_size == 1  # a packed F4/F6 scalar is not whole bytes
    ],
)
def test_reference_reads_every_dtype_we_write(dtype, shape, tmp_path):
    tensor = _tensor_of(dtype, shape, len(shape))
    other = Tensor.from_array("z.other", np.arange(5, dtype=np.float32))
    out = tmp_path / "x.safetensors"
    stf.write(Bundle({"note": "oracle"}, [tensor, other]), out)
    data = out.read_bytes()
    found = dict(safetensors.deserialize(data))
    assert found[tensor.name]["dtype"] == dtype
    assert tuple(found[tensor.name]["shape"]) == shape
    assert bytes(found[tensor.name]["data"]) == tensor.raw().tobytes()
    if dtype not in SAFE_OPEN_DTYPES and DTYPES[dtype].numpy_dtype:
        with safe_open(str(out), framework="numpy") as f:
            assert f.metadata()["note"] == "oracle"
            assert sorted(f.keys()) == sorted([tensor.name, other.name])
            got = f.get_tensor(tensor.name)
            assert got.shape == shape
            assert got.tobytes() == tensor.raw().tobytes()
            assert np.array_equal(f.get_tensor(other.name), np.arange(5, dtype=np.float32))
    back = stf.read(out)
    assert [(t.name, t.codec.name, t.shape) for t in back.tensors.values()] == [
        (t.name, t.codec.name, t.shape) for t in (tensor, other)
    ]


def test_reference_reads_a_typed_bundle_with_block_tensors(tmp_path):
    from gguf import GGMLQuantizationType
    from gguf.quants import quantize

    x = np.linspace(-1, 1, 4 * 64, dtype=np.float32).reshape(4, 64)
    q = quantize(x, GGMLQuantizationType.Q4_0)
    bundle = Bundle(
        {"general.name": "tiny", "n_layer": 2},
        [Tensor.from_raw("w", (4, 64), "q4_0", q)],
    )
    out = tmp_path / "typed.safetensors"
    stf.write(bundle, out)
    with safe_open(str(out), framework="numpy") as f:
        assert f.metadata()["general.name"] == "tiny"
        assert "bundler.metadata" in f.metadata()
        got = f.get_tensor("w")
    assert got.dtype == np.uint8 and got.shape == (4, 36)
    assert np.array_equal(got, q)


@pytest.mark.parametrize(
    "np_dtype",
    [np.dtype(f.numpy_dtype) for f in TABLE if f.safetensors_dtype and f.numpy_dtype],
    ids=str,
)
def test_we_read_every_dtype_the_reference_writes(np_dtype, tmp_path):
    rng = np.random.default_rng(0)
    arrays = {
        "a": rng.integers(0, 256, 48, dtype=np.uint8).view(np_dtype).reshape(-1, 2),
        "empty": np.zeros((0, 2), np_dtype),
        "scalar": np.zeros((), np_dtype),
    }
    path = tmp_path / "ref.safetensors"
    path.write_bytes(reference_save(arrays, metadata={"format": "np"}))
    bundle = stf.read(path)
    assert dict(bundle.metadata) == {"format": "np"}
    assert set(bundle.tensors) == set(arrays)
    for name, array in arrays.items():
        t = bundle.tensors[name]
        assert t.codec.facts.safetensors_dtype == DTYPES_BY_NUMPY[np_dtype]
        assert t.shape == array.shape
        assert t.raw().tobytes() == array.tobytes()
        assert b"".join(c.tobytes() for c in t.iter_raw(4)) == array.tobytes()


DTYPES_BY_NUMPY = {
    np.dtype(f.numpy_dtype): f.safetensors_dtype
    for f in TABLE
    if f.safetensors_dtype and f.numpy_dtype
}


def test_we_read_what_serialize_file_writes_for_packed_f4(tmp_path):
    buf = np.arange(8, dtype=np.uint8)
    spec = safetensors.TensorSpec(
        dtype="float4_e2m1fn_x2", shape=[2, 4], data_ptr=buf.ctypes.data, data_len=8
    )
    path = tmp_path / "f4.safetensors"
    safetensors.serialize_file({"f4": spec}, str(path), None)
    t = stf.read(path).tensors["f4"]
    assert (t.codec.name, t.shape) == ("f4", (2, 8))
    assert t.raw().tobytes() == buf.tobytes()
    out = tmp_path / "again.safetensors"
    stf.write(stf.read(path), out)
    assert out.read_bytes() == path.read_bytes()
