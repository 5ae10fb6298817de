"""Which importance weights each tensor of a plan is encoded with, as llama-quantize matches
them: by the tensor's name (its name before `--prune-layers` renumbered the blocks), for
every tensor whose type changes.

- no entry for a tensor: it is encoded without weights (llama-quantize says "did not find
  weights" and goes on);
- an entry whose length is not the tensor's columns times its experts: an error, but for
  the token embedding, which is then encoded without weights (llama-quantize's exception);
- a matrix that names none of the model's tensors was computed for another model: an error
  (llama-quantize would quantize the whole model without weights and still record the
  matrix in the metadata).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

import numpy as np

from bundler.errors import ImportanceMismatchError
from bundler.importance.matrix import ImportanceMatrix

#: Tensors whose wrong-length entry llama-quantize ignores instead of refusing.
TOKEN_EMBD_NAMES = ("token_embd.weight", "per_layer_token_embd.weight")


@dataclass
class Fit:
    """The weights of each tensor that gets them, and the tensors that get none (why)."""

    weights: dict[str, np.ndarray] = field(default_factory=dict)
    without: dict[str, str] = field(default_factory=dict)


def expected_length(shape: tuple[int, ...]) -> int:
    """The entry length a tensor of numpy `shape` needs: its columns (ne0) times its third
    GGML dimension (ne2, the experts), as llama-quantize checks it."""
    ne0 = shape[-1] if shape else 1
    ne2 = shape[-3] if len(shape) >= 3 else 1
    return ne0 * ne2


def fit(
    matrix: ImportanceMatrix,
    changed: Iterable[tuple[str, tuple[int, ...]]],
    model_names: Iterable[str],
    original_name: Callable[[str], str] = lambda n: n,
) -> Fit:
    """The weights of each (name, shape) in `changed` (the tensors whose type changes),
    looked up under `original_name(name)`; `model_names` are all the model's tensor
    names (before renaming), to tell a matrix from another model."""
    where = f" ({matrix.path})" if matrix.path else ""
    names = set(model_names)
    if matrix.entries and not names.intersection(matrix.entries):
        some = ", ".join(sorted(matrix.entries)[:3])
        raise ImportanceMismatchError(
            f"the importance matrix{where} names none of this model's tensors (it has "
            f"{len(matrix.entries)} entries such as {some}): it was computed for another model"
        )
    out = Fit()
    for name, shape in changed:
        key = original_name(name)
        weights = matrix.entries.get(key)
        if weights is None:
            out.without[name] = "no importance data"
            continue
        need = expected_length(shape)
        if weights.size != need:
            problem = (
                f"importance matrix{where} entry {key!r} has {weights.size:,} weights but "
                f"tensor {name!r} of shape {list(shape)} needs {need:,}"
            )
            if name in TOKEN_EMBD_NAMES:
                out.without[name] = f"{problem}: encoded without them"
                continue
            raise ImportanceMismatchError(f"{problem}; was it computed for another model?", name)
        out.weights[name] = weights
    return out
