"""Generate the APR v2 conformance files of formats/apr.md, and their expected content.

    python formats/conformance/make_apr.py            # writes only files that are missing
    python formats/conformance/make_apr.py --force    # regenerates them all (review the diff!)

Each `apr/<name>.apr` comes with `apr/<name>.json`: the file's sha256 and size, its header
flags, the metadata JSON text as stored, the typed metadata bundler reads from it (the typed
JSON of bundler.containers.typed_json) and every tensor's name, numpy shape, codec, APR
dtype code, offset in the data section, size and sha256 of its bytes, in data order.
tests/containers/test_apr_conformance.py checks that bundler reads each file as described
and that writing the same content again gives the same bytes.
"""

from __future__ import annotations

import hashlib
import json
import os
import struct
import sys
import warnings

import numpy as np

from bundler.bundle import Bundle, Metadata, Tensor, Value, ValueType
from bundler.codecs import TABLE, get
from bundler.containers import apr, typed_json
from bundler.containers.apr import metadata as apr_metadata
from bundler.errors import AprCompatibilityWarning

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import sample_files

HERE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "apr")


def minimal() -> Bundle:
    """No metadata, one float32 tensor."""
    return Bundle(Metadata(), [Tensor.from_array("weight", np.arange(6, dtype=np.float32))])


def _tensor_of(codec: str, seed: int) -> Tensor:
    facts = get(codec).facts
    name = f"t.{codec}"
    if facts.flat:
        values = np.linspace(-3.5, 3.5, 40, dtype=np.float32)
        return Tensor.from_raw(name, (40,), codec, get(codec).encode(values))
    if not facts.is_block:
        values = np.arange(-3, 3).astype(np.dtype(facts.numpy_dtype)).reshape(2, 3)
        return Tensor.from_raw(name, (2, 3), codec, values.tobytes())
    # block bytes are copied, never decoded: deterministic bytes of the right length
    rng = np.random.default_rng(seed)
    raw = rng.integers(0, 256, facts.nbytes((2, facts.block_size)), dtype=np.uint8)
    return Tensor.from_raw(name, (2, facts.block_size), codec, raw)


def every_dtype() -> Bundle:
    """One tensor of every codec with an APR code, aprender's and this project's."""
    md = Metadata({"general.architecture": "conformance"})
    tensors = [_tensor_of(f.name, i) for i, f in enumerate(TABLE) if f.apr_code is not None]
    return Bundle(md, tensors)


def typed_metadata() -> Bundle:
    """Every metadata value type, nested arrays and non-finite floats included."""
    md = Metadata()
    md.set("general.architecture", "llama", ValueType.STRING)
    md.set("general.name", "bundler APR conformance file", ValueType.STRING)
    md.set("general.license", "MIT", ValueType.STRING)
    sample_files.set_every_scalar(md, False)
    md.set("t.nan", float("nan"), ValueType.FLOAT32)
    md.set("t.inf", float("-inf"), ValueType.FLOAT64)
    md.set("a.strings", ["", "<s>", "▁tok"], ValueType.ARRAY, ValueType.STRING)
    md.set("a.int32", np.arange(-2, 3, dtype=np.int32), ValueType.ARRAY, ValueType.INT32)
    md.set("a.float32", np.array([0.5, -1.25], np.float32), ValueType.ARRAY, ValueType.FLOAT32)
    md.set("a.bool", np.array([True, False]), ValueType.ARRAY, ValueType.BOOL)
    nested = [
        Value(ValueType.ARRAY, np.array([1, 2], np.uint16), ValueType.UINT16),
        Value(ValueType.ARRAY, ["x"], ValueType.STRING),
    ]
    md.set("a.nested", nested, ValueType.ARRAY, ValueType.ARRAY)
    return Bundle(md, [Tensor.from_array("w", np.ones(4, np.float32))])


def data_order() -> Bundle:
    """An index sorted by name whose data is stored in another order."""
    tensors = [
        Tensor.from_array("zeta", np.full(20, 3.0, np.float32)),
        Tensor.from_array("alpha", np.arange(3, dtype=np.float32)),
        Tensor.from_array("mid", np.linspace(-1, 1, 33, dtype=np.float32), "apr_q4"),
    ]
    return Bundle(Metadata({"order": "zeta, alpha, mid"}), tensors)


#: A metadata section as aprender writes it: no `bundler.metadata`, types inferred on read.
APRENDER_JSON = (
    '{"model_type":"qwen2","name":"tiny","license":null,"data_source":null,'
    '"data_license":null,"total_size":24,"param_count":6,"hidden_size":64,'
    '"rope_theta":1000000.0,"quantization":{"quant_type":"int4","bits":4,'
    '"block_size":32,"symmetric":true},"tokenizer.vocabulary":["<s>","a"]}'
)


def aprender_metadata() -> Bundle:
    """A file whose metadata is aprender's own JSON (read with inferred types)."""
    md, _ = apr_metadata.loads(APRENDER_JSON.encode(), None, 64)
    info = {"metadata_json": APRENDER_JSON, "metadata_snapshot": typed_json.dumps(md)}
    t = Tensor.from_array("model.embed_tokens.weight", np.arange(6, dtype=np.float32))
    return Bundle(md, [t], format="apr", format_info={"flags": 0x0400, **info})


BUILDERS = {
    "minimal": minimal,
    "every_dtype": every_dtype,
    "typed_metadata": typed_metadata,
    "data_order": data_order,
    "aprender_metadata": aprender_metadata,
}


def build(name: str, path: str) -> None:
    """Write conformance file `name` to `path`."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", AprCompatibilityWarning)
        apr.write(BUILDERS[name](), path)


def describe(path: str) -> dict:
    """The expected content of a conformance file."""
    with open(path, "rb") as f:
        data = f.read()
    bundle = apr.read(path)
    data_offset = struct.unpack_from("<Q", data, 32)[0]
    meta_size = struct.unpack_from("<I", data, 20)[0]
    tensors = [
        {
            "name": t.name,
            "shape": list(t.shape),
            "codec": t.codec.name,
            "apr_code": t.codec.facts.apr_code,
            "offset": t.source.offset - data_offset,
            "size": t.nbytes,
            "sha256": sample_files.tensor_sha256(t),
        }
        for t in bundle.tensors.values()
    ]
    return {
        "file": os.path.basename(path),
        "sha256": hashlib.sha256(data).hexdigest(),
        "size": len(data),
        "flags": struct.unpack_from("<H", data, 6)[0],
        "data_offset": data_offset,
        "metadata_json": data[64 : 64 + meta_size].decode("utf-8"),
        "metadata": json.loads(typed_json.dumps(bundle.metadata)),
        "tensors": tensors,
    }


#: Where each sample is written, and `main(argv)`: write the missing ones (all with --force).
target_of, main = sample_files.generator(__doc__, HERE, "apr", BUILDERS, build, describe)


if __name__ == "__main__":
    sys.exit(main())
