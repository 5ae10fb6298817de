"""Generate the SafeTensors conformance files of formats/safetensors.md, and their expected content.

    python formats/conformance/make_safetensors.py            # writes only what is missing
    python formats/conformance/make_safetensors.py --force    # regenerates all (review the diff!)

Each `safetensors/<name>.safetensors` (or, for a sharded checkpoint, the directory
`safetensors/<name>/`) comes with `safetensors/<name>.json`: the sha256 and size of every
file, the header JSON text as stored, the typed metadata bundler reads (the typed JSON of
bundler.containers.typed_json) and every tensor's name, codec, logical shape, stored dtype and
shape, byte range in its file's data buffer and sha256 of its bytes, in bundle order.
tests/containers/test_safetensors_conformance.py checks that bundler reads each file as
described, that writing the same content again gives the same bytes, and that the
`safetensors` package reads every file.
"""

from __future__ import annotations

import hashlib
import os
import sys

import ml_dtypes  # noqa: F401  (numpy names for bfloat16 and the float8 dtypes)
import numpy as np

from bundler.bundle import Bundle, Metadata, Tensor, Value, ValueType
from bundler.codecs import get
from bundler.containers import safetensors, typed_json
from bundler.containers.safetensors.convention import stored_form

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import sample_files

HERE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "safetensors")
#: The cut of the sharded sample, in bytes.
SHARD_SIZE = 100


def plain() -> Bundle:
    """String metadata, tensors in the writer's own order: no bundler keys at all."""
    tensors = [
        Tensor.from_array("position_ids", np.arange(4, dtype=np.int64).reshape(1, 4)),
        Tensor.from_array("dense.bias", np.linspace(-1, 1, 3, dtype=np.float32)),
        Tensor.from_array("dense.weight", np.arange(6, dtype=np.float32).reshape(2, 3)),
        Tensor.from_array("empty", np.zeros((0, 3), np.float32)),
        Tensor.from_array("scalar", np.array(7, dtype=np.uint8)),
    ]
    return Bundle(Metadata({"format": "pt"}), tensors)


def _element_tensor(dtype: str, seed: int) -> Tensor:
    facts = get(dtype.lower()).facts
    shape = (2, 4)
    raw = np.random.default_rng(seed).integers(0, 256, facts.nbytes(shape), dtype=np.uint8)
    if dtype == "BOOL":
        raw &= 1
    return Tensor.from_raw(f"t.{dtype.lower()}", shape, facts.name, raw)


def every_dtype() -> Bundle:
    """One tensor of every SafeTensors dtype, packed F4/F6 included, laid out canonically."""
    from bundler.containers.safetensors.schema import DTYPE_ORDER

    tensors = [_element_tensor(d, i) for i, d in enumerate(reversed(DTYPE_ORDER))]
    return Bundle(Metadata({"note": "one tensor per dtype"}), tensors)


def _quantized(name: str, qtype: str, shape: tuple[int, ...]) -> Tensor:
    from gguf import GGMLQuantizationType
    from gguf.quants import quantize

    x = np.sin(np.arange(np.prod(shape), dtype=np.float32) * 0.37).reshape(shape)
    raw = quantize(x, GGMLQuantizationType[qtype.upper()])
    return Tensor.from_raw(name, shape, qtype, raw)


def typed_q4_0() -> Bundle:
    """Typed metadata and Q4_0/Q8_0 blocks, in an order that is not the file's."""
    md = Metadata()
    md.set("general.architecture", "llama", ValueType.STRING)
    md.set("general.name", "conformance", ValueType.STRING)
    md.set("llama.block_count", 1, ValueType.UINT32)
    md.set("llama.rope.freq_base", 10000.0, ValueType.FLOAT32)
    md.set("llama.attention.layer_norm_rms_epsilon", 1e-5, ValueType.FLOAT32)
    md.set("general.file_type", 2, ValueType.UINT32)
    md.set("tokenizer.ggml.tokens", ["<s>", "</s>", "▁a"], ValueType.ARRAY, ValueType.STRING)
    scores = np.array([0.0, -1.5, -2.25], np.float32)
    md.set("tokenizer.ggml.scores", scores, ValueType.ARRAY, ValueType.FLOAT32)
    md.set(
        "t.nested",
        [Value(ValueType.ARRAY, np.array([1, 2], np.int16), ValueType.INT16)],
        ValueType.ARRAY,
        ValueType.ARRAY,
    )
    md.set("t.flag", True, ValueType.BOOL)
    md.set("t.int64", -(2**40), ValueType.INT64)
    embd = np.linspace(-1, 1, 3 * 32, dtype=np.float32).reshape(3, 32)
    tensors = [
        Tensor.from_array("token_embd.weight", embd),
        _quantized("blk.0.attn_q.weight", "q4_0", (2, 64)),
        _quantized("blk.0.ffn_down.weight", "q8_0", (2, 32)),
        Tensor.from_array("blk.0.attn_norm.weight", np.ones(32, np.float32)),
    ]
    return Bundle(md, tensors)


def sharded() -> Bundle:
    """A checkpoint cut at SHARD_SIZE bytes: three shards and an index."""
    tensors = [
        Tensor.from_array(f"layer.{i}.weight", np.full((4, 4), i, dtype=np.float32))
        for i in range(3)
    ]
    tensors.append(Tensor.from_array("layer.3.bias", np.arange(8, dtype=np.float32)))
    return Bundle(Metadata({"format": "pt"}), tensors)


BUILDERS = {"plain": plain, "every_dtype": every_dtype, "typed_q4_0": typed_q4_0}
SHARDED = {"sharded": sharded}


def build(name: str, path: str) -> None:
    """Write conformance sample `name` to `path` (a file, or a directory for a sharded one)."""
    if name in SHARDED:
        os.makedirs(path, exist_ok=True)
        safetensors.write(SHARDED[name](), path, max_shard_size=SHARD_SIZE)
    else:
        safetensors.write(BUILDERS[name](), path)


def _sha256(path: str) -> str:
    with open(path, "rb") as f:
        return hashlib.sha256(f.read()).hexdigest()


def _header_text(path: str) -> str:
    with open(path, "rb") as f:
        n = int.from_bytes(f.read(8), "little")
        return f.read(n).decode("utf-8")


def describe(path: str) -> dict:
    """The expected content of a conformance sample (a file or a sharded directory)."""
    files = sorted(os.listdir(path)) if os.path.isdir(path) else [os.path.basename(path)]
    folder = path if os.path.isdir(path) else os.path.dirname(path)
    bundle = safetensors.read(path)
    tensors = []
    for t in bundle.tensors.values():
        stored = stored_form(t)
        begin = t.source.offset - 8 - len(_header_text(t.source.path).encode("utf-8"))
        tensors.append(
            {
                "name": t.name,
                "codec": t.codec.name,
                "shape": list(t.shape),
                "stored_dtype": stored.dtype,
                "stored_shape": list(stored.shape),
                "file": os.path.basename(t.source.path),
                "data_offsets": [begin, begin + t.nbytes],
                "sha256": sample_files.tensor_sha256(t),
            }
        )
    return {
        "files": {
            name: {
                "sha256": _sha256(os.path.join(folder, name)),
                "size": os.path.getsize(os.path.join(folder, name)),
                "header": _header_text(os.path.join(folder, name))
                if name.endswith(".safetensors")
                else None,
            }
            for name in files
        },
        "metadata": typed_json.to_entries(bundle.metadata),
        "tensors": tensors,
    }


#: Where each sample is written, and `main(argv)`: write the missing ones (all with --force).
target_of, main = sample_files.generator(
    __doc__, HERE, "safetensors", BUILDERS, build, describe, SHARDED
)


if __name__ == "__main__":
    sys.exit(main())
