"""The batch tests' model zoo (the real MiniLM SafeTensors and SmolLM2 GGUF, two generated
models, one broken file in the middle) and helpers. Test modules import the fixtures."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

import bundler
from bundler.atomic import TEMP_PREFIX

#: The type every zoo model is converted to: quick, and valid for all of them.
TYPE = "Q8_0"


def generated(path: Path, seed: int, rows: int = 256, cols: int = 512, count: int = 3) -> Path:
    rng = np.random.default_rng(seed)
    tensors = [
        bundler.Tensor.from_array(
            f"blk.{i}.ffn_up.weight", rng.standard_normal((rows, cols), dtype=np.float32)
        )
        for i in range(count)
    ]
    bundler.Bundle({"general.architecture": "llama"}, tensors).save(path)
    return path


def partials(directory: Path) -> list[Path]:
    return sorted(p for p in Path(directory).rglob("*") if p.name.startswith(TEMP_PREFIX))


def outputs(directory: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(Path(directory).iterdir()) if p.is_file()}


@pytest.fixture(scope="session")
def zoo(tmp_path_factory, minilm_safetensors, smollm2_gguf) -> list[Path]:
    """Five inputs in order: MiniLM, a generated GGUF, a truncated GGUF (broken), a
    generated SafeTensors, SmolLM2."""
    d = tmp_path_factory.mktemp("zoo")
    (d / "minilm.safetensors").symlink_to(minilm_safetensors)
    (d / "smollm2.gguf").symlink_to(smollm2_gguf)
    broken = d / "broken.gguf"
    with open(smollm2_gguf, "rb") as f:
        broken.write_bytes(f.read(200_000))
    return [
        d / "minilm.safetensors",
        generated(d / "gen-a.gguf", 1),
        broken,
        generated(d / "gen-b.safetensors", 2),
        d / "smollm2.gguf",
    ]


@pytest.fixture(scope="session")
def expected(zoo, tmp_path_factory) -> dict[str, bytes]:
    """Each good zoo model converted alone with `bundler.quantize`, by output file name."""
    d = tmp_path_factory.mktemp("expected")
    out = {}
    for src in zoo:
        if src.name.startswith("broken"):
            continue
        dst = d / f"{src.name.rsplit('.', 1)[0]}-{TYPE}.{src.name.rsplit('.', 1)[1]}"
        bundler.quantize(src, dst, TYPE, allow_requantize=True)
        out[dst.name] = dst.read_bytes()
    return out
