"""What the per-tensor rules need to know about the whole model: its tensors, whether it
has an output tensor, and the hyperparameters llama.cpp's mixtures read."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from bundler.bundle import Bundle


@dataclass(frozen=True)
class HyperParams:
    """What the mixture rules read from the model's metadata."""

    arch: str
    n_layer: int
    n_head: int
    n_head_kv: int
    n_expert: int

    @property
    def n_gqa(self) -> int:
        return self.n_head // self.n_head_kv if self.n_head_kv else 0

    @property
    def is_70b(self) -> bool:
        """llama.cpp's LLM_TYPE_70B, the only model size its rules look at."""
        return self.arch == "llama" and self.n_layer == 80 and self.n_head != self.n_head_kv


@dataclass(frozen=True)
class ModelInfo:
    """What the per-tensor rules need to know about the whole model."""

    has_output: bool
    names: tuple[str, ...]
    hparams: HyperParams


def model_info(bundle: Bundle, overrides: Mapping[str, Any] | None = None) -> ModelInfo:
    """What the rules know of `bundle`, reading its metadata through `overrides`."""
    overrides = overrides or {}

    def read(key: str, default: Any) -> Any:
        return overrides[key] if key in overrides else bundle.metadata.get(key, default)

    arch = str(read("general.architecture", ""))

    def number(key: str, default: int = 0) -> int:
        value = read(f"{arch}.{key}", default)
        return int(value) if isinstance(value, (int, float)) else default

    n_head = number("attention.head_count")
    hp = HyperParams(
        arch=arch,
        n_layer=number("block_count"),
        n_head=n_head,
        n_head_kv=number("attention.head_count_kv", n_head),
        n_expert=number("expert_count"),
    )
    return ModelInfo("output.weight" in bundle.tensors, tuple(bundle.tensors), hp)
