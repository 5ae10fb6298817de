"""The float32 models `bundler bench convert` converts.

- `generate(path, size_gib)`: float32 SafeTensors of 4096 x 4096 matrices with llama-like
  names (the input of the `gguf` package comparison);
- `llama_shaped(path, size_gib)`: a generated llama-architecture model (the tensor names,
  shapes and hyper-parameters llama.cpp loads: token embeddings, per block attention with
  grouped K/V heads and a gated feed-forward, norms, an output matrix) of about `size_gib`
  GiB of float32 weight-like values, written streamed;
- `smollm2_f32()`: SmolLM2-135M-Instruct (the package index's Q4_1 GGUF) decoded to float32
  by `bundler quantize --type f32`, cached beside the downloaded file.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from bundler.errors import BundlerError

GIB = 1 << 30
SIDE = 4096


def _values_source_class():
    from bundler.bundle import Source

    class ValuesSource(Source):
        """Weight-like float32 values, made a chunk at a time from one random block."""

        def __init__(self, nbytes: int, seed: int, base: np.ndarray):
            self.nbytes, self.seed, self.base = nbytes, seed, base

        def raw(self) -> np.ndarray:
            return np.concatenate(list(self.iter_raw(8 << 20)))

        def iter_raw(self, chunk_bytes: int) -> Iterator[np.ndarray]:
            rng = np.random.default_rng(self.seed)
            out = np.empty_like(self.base)
            left = self.nbytes
            while left:
                scale, shift = rng.uniform(0.01, 0.1), rng.uniform(-0.01, 0.01)
                np.multiply(self.base, np.float32(scale), out=out)
                out += np.float32(shift)
                n = min(left, out.nbytes, chunk_bytes - chunk_bytes % 4 or 4)
                yield out.view(np.uint8)[:n]
                left -= n

    return ValuesSource


def generate(path: str | os.PathLike[str], size_gib: float) -> int:
    """Write the float32 SafeTensors model (streamed, never held whole); returns its size."""
    from bundler.bundle import Bundle, Tensor

    source = _values_source_class()
    base = np.random.default_rng(0).standard_normal(2 << 20, dtype=np.float32)
    bundle = Bundle({"general.architecture": "llama"})
    matrices = max(1, round(size_gib * GIB / (SIDE * SIDE * 4)))
    for i in range(matrices):
        bundle.add(
            Tensor(f"blk.{i}.attn_norm.weight", (SIDE,), "f32", source(SIDE * 4, 2**20 + i, base))
        )
        nbytes = SIDE * SIDE * 4
        bundle.add(Tensor(f"blk.{i}.ffn_up.weight", (SIDE, SIDE), "f32", source(nbytes, i, base)))
    bundle.add(Tensor("output_norm.weight", (SIDE,), "f32", source(SIDE * 4, 10**6, base)))
    bundle.save(path, format="safetensors")
    return os.path.getsize(path)


#: The llama-shaped model's fixed dimensions; the block count (and, below 1 GiB, the
#: vocabulary) follows the asked size. 2816 and 1024 are whole numbers of 256-value blocks.
EMBED, FEED_FORWARD, HEADS, KV_HEADS, VOCAB, CONTEXT = 1024, 2816, 16, 4, 32000, 4096


def _shapes(size_gib: float) -> tuple[int, int]:
    """(vocabulary rows, blocks): embeddings take at most a quarter of the budget."""
    budget = size_gib * GIB / 4  # float32 values
    vocab = int(min(VOCAB, max(256, budget / 4 / (2 * EMBED) // 256 * 256)))
    kv = EMBED // HEADS * KV_HEADS
    per_block = 2 * EMBED * EMBED + 2 * kv * EMBED + 3 * EMBED * FEED_FORWARD + 2 * EMBED
    blocks = max(1, round((budget - 2 * vocab * EMBED) / per_block))
    return vocab, blocks


def llama_shaped(path: str | os.PathLike[str], size_gib: float) -> int:
    """Write the generated float32 llama model to GGUF `path`; returns the file size."""
    from bundler.bundle import Bundle, Metadata, Tensor, ValueType

    vocab, blocks = _shapes(size_gib)
    md = Metadata()
    md.set("general.architecture", "llama", ValueType.STRING)
    md.set("general.name", f"bench-llama-{blocks}x{EMBED}", ValueType.STRING)
    md.set("general.file_type", 0, ValueType.UINT32)  # all F32
    for key, value in (
        ("context_length", CONTEXT), ("embedding_length", EMBED), ("block_count", blocks),
        ("feed_forward_length", FEED_FORWARD), ("rope.dimension_count", EMBED // HEADS),
        ("attention.head_count", HEADS), ("attention.head_count_kv", KV_HEADS),
        ("vocab_size", vocab),
    ):  # fmt: skip
        md.set(f"llama.{key}", value, ValueType.UINT32)
    md.set("llama.attention.layer_norm_rms_epsilon", 1e-5, ValueType.FLOAT32)
    source = _values_source_class()
    base = np.random.default_rng(0).standard_normal(2 << 20, dtype=np.float32)
    bundle = Bundle(md)
    kv = EMBED // HEADS * KV_HEADS

    def add(name: str, *shape: int) -> None:
        seed = len(bundle.tensors)
        n = int(np.prod(shape)) * 4
        bundle.add(Tensor(name, shape, "f32", source(n, seed, base)))

    add("token_embd.weight", vocab, EMBED)
    for i in range(blocks):
        b = f"blk.{i}."
        add(b + "attn_norm.weight", EMBED)
        add(b + "attn_q.weight", EMBED, EMBED)
        add(b + "attn_k.weight", kv, EMBED)
        add(b + "attn_v.weight", kv, EMBED)
        add(b + "attn_output.weight", EMBED, EMBED)
        add(b + "ffn_norm.weight", EMBED)
        add(b + "ffn_gate.weight", FEED_FORWARD, EMBED)
        add(b + "ffn_up.weight", FEED_FORWARD, EMBED)
        add(b + "ffn_down.weight", EMBED, FEED_FORWARD)
    add("output_norm.weight", EMBED)
    add("output.weight", vocab, EMBED)
    bundle.save(path, format="gguf")
    return os.path.getsize(path)


def smollm2_f32() -> Path:
    """SmolLM2-135M-Instruct as a float32 GGUF (about 515 MiB), decoded once and cached."""
    from bundler.assets import SMOLLM2_SHA256, smollm2_gguf

    source = smollm2_gguf()
    target = source.with_name(f"SmolLM2-135M-Instruct.F32-{SMOLLM2_SHA256[:12]}.gguf")
    if target.exists():
        return target
    cmd = [sys.executable, "-m", "bundler", "quantize", str(source), "-o", str(target)]
    done = subprocess.run([*cmd, "--type", "f32"], capture_output=True, text=True)
    if done.returncode:
        raise BundlerError(f"decoding {source} to float32 failed: {done.stderr.strip()[-2000:]}")
    return target
