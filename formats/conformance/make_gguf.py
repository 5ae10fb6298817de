"""Generate the GGUF conformance files of formats/gguf.md, and their expected content.

    python formats/conformance/make_gguf.py            # writes only files that are missing
    python formats/conformance/make_gguf.py --force    # regenerates them all (review the diff!)

Each `gguf/<name>.gguf` comes with `gguf/<name>.json`: the file's sha256, version, byte
order, alignment, typed metadata (the typed JSON of bundler.containers.typed_json) and
every tensor's name, numpy shape, codec, offset in the data section and sha256 of its
little-endian bytes. tests/containers/test_gguf_conformance.py checks that bundler reads
each file as described and that writing the same content again gives the same bytes.
"""

from __future__ import annotations

import hashlib
import json
import os
import sys

import numpy as np

from bundler.bundle import Bundle, Metadata, Tensor, Value, ValueType
from bundler.codecs import get
from bundler.containers import gguf, typed_json

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import sample_files

HERE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "gguf")


def _blocks(codec: str, rows: int, cols: int, seed: int) -> Tensor:
    """Deterministic block bytes with a finite half scale in each block's first two bytes."""
    facts = get(codec).facts
    rng = np.random.default_rng(seed)
    nbytes = facts.nbytes((rows, cols))
    raw = rng.integers(0, 256, nbytes, dtype=np.uint8).reshape(-1, facts.type_size)
    raw[:, :2] = np.frombuffer(np.float16(0.0125).tobytes(), np.uint8)
    return Tensor.from_raw(f"blk.{codec}", (rows, cols), codec, raw.reshape(-1))


def _base(arch: str = "conformance") -> Metadata:
    md = Metadata()
    md.set("general.architecture", arch, ValueType.STRING)
    md.set("general.name", "bundler GGUF conformance file", ValueType.STRING)
    return md


def minimal() -> tuple[Bundle, dict]:
    md = _base()
    t = Tensor.from_array("weight", np.arange(6, dtype=np.float32).reshape(2, 3))
    return Bundle(md, [t]), {}


def every_value_type() -> tuple[Bundle, dict]:
    md = _base()
    sample_files.set_every_scalar(md, True)
    for vt in ValueType:
        if vt.numpy_dtype is None:
            continue
        values = np.arange(5).astype(vt.numpy_dtype) if vt != ValueType.BOOL else None
        if values is None:
            values = np.array([True, False, True])
        md.set(f"a.{vt.name.lower()}", values, ValueType.ARRAY, vt)
    md.set(
        "a.string", ["", "a", "tokens ▁with spaces", "\u0000nul"], ValueType.ARRAY, ValueType.STRING
    )
    md.set("a.empty", np.zeros(0, np.int32), ValueType.ARRAY, ValueType.INT32)
    md.set("a.empty_strings", [], ValueType.ARRAY, ValueType.STRING)
    tensors = [
        Tensor.from_array("f32", np.linspace(-1, 1, 64, dtype=np.float32).reshape(2, 32)),
        Tensor.from_array("f16", np.linspace(-2, 2, 32, dtype=np.float16)),
        Tensor.from_array("i32", np.arange(-4, 4, dtype=np.int32)),
        _blocks("q8_0", 2, 64, 1),
        _blocks("q4_0", 1, 64, 2),
    ]
    return Bundle(md, tensors), {}


def big_endian() -> tuple[Bundle, dict]:
    bundle, _ = every_value_type()
    return bundle, {"big_endian": True}


def alignment_64() -> tuple[Bundle, dict]:
    md = _base()
    md.set("general.alignment", 64, ValueType.UINT32)
    tensors = [
        Tensor.from_array("a", np.arange(3, dtype=np.float32)),
        Tensor.from_array("b", np.arange(5, dtype=np.float32)),
        _blocks("q4_1", 1, 32, 3),
    ]
    return Bundle(md, tensors), {}


def vocab_only() -> tuple[Bundle, dict]:
    md = _base("llama")
    md.set("tokenizer.ggml.model", "llama", ValueType.STRING)
    md.set("tokenizer.ggml.tokens", ["<s>", "</s>", "▁a"], ValueType.ARRAY, ValueType.STRING)
    md.set(
        "tokenizer.ggml.scores",
        np.array([0, 0, -1], np.float32),
        ValueType.ARRAY,
        ValueType.FLOAT32,
    )
    return Bundle(md, []), {}


def nested_array() -> tuple[Bundle, dict]:
    md = _base()
    inner = [
        Value(ValueType.ARRAY, np.array([1, 2], np.int32), ValueType.INT32),
        Value(ValueType.ARRAY, ["x", "y"], ValueType.STRING),
    ]
    md.set("a.nested", inner, ValueType.ARRAY, ValueType.ARRAY)
    return Bundle(md, []), {"llama_compatible": False}


#: name -> builder returning (bundle, write options); v2 is minimal with version 2 patched in.
BUILDERS = {
    "minimal": minimal,
    "every_value_type": every_value_type,
    "big_endian": big_endian,
    "alignment_64": alignment_64,
    "vocab_only": vocab_only,
    "nested_array": nested_array,
}
NAMES = (*BUILDERS, "v2")


def build(name: str, path: str) -> None:
    """Write conformance file `name` to `path`."""
    if name == "v2":
        bundle, options = minimal()
        gguf.write(bundle, path, **options)
        with open(path, "r+b") as f:
            f.seek(4)
            f.write((2).to_bytes(4, "little"))
        return
    bundle, options = BUILDERS[name]()
    gguf.write(bundle, path, **options)


def describe(path: str) -> dict:
    """The expected content of a conformance file, as bundler reads it."""
    bundle = gguf.read(path)
    with open(path, "rb") as f:
        sha = hashlib.sha256(f.read()).hexdigest()
    tensors = []
    for t in bundle.tensors.values():
        tensors.append(
            {
                "name": t.name,
                "shape": list(t.shape),
                "codec": t.codec.name,
                "nbytes": t.nbytes,
                "offset": t.source.offset,
                "sha256": sample_files.tensor_sha256(t),
            }
        )
    info = bundle.format_info
    return {
        "file": os.path.basename(path),
        "sha256": sha,
        "version": info["version"],
        "big_endian": info["big_endian"],
        "alignment": info["alignment"],
        "metadata": json.loads(typed_json.dumps(bundle.metadata)),
        "tensors": tensors,
    }


#: Where each sample is written, and `main(argv)`: write the missing ones (all with --force).
target_of, main = sample_files.generator(__doc__, HERE, "gguf", NAMES, build, describe)


if __name__ == "__main__":
    sys.exit(main())
