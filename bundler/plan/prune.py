"""llama-quantize's `--prune-layers L0,L1,...`: the tensors of those blocks (`blk.N.`) are
dropped and the blocks after the first pruned one renumbered so the numbers stay
consecutive; `{arch}.block_count` becomes the number of blocks kept. Other metadata (per
layer arrays, ...) is left as it is, as llama-quantize leaves it.

Blocks are met in llama.cpp's loader order (outside tensors first, then block by block);
a block keeps its number when it comes before the first pruned layer.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass

from bundler.bundle import Bundle, Tensor
from bundler.errors import UsageError
from bundler.plan.mixtures import loader_order

_BLOCK = re.compile(r"blk\.(\d+)\.")


@dataclass(frozen=True)
class Pruning:
    """What pruning did: each kept tensor's original name by its new one, and the number
    of blocks kept."""

    origin: dict[str, str]
    block_count: int


#: What C++'s std::stoi reads: blanks, a sign, digits (the rest of the text is ignored).
_STOI = re.compile(r"[ \t\n\v\f\r]*([+-]?\d+)")


def parse_layers(text: str) -> list[int]:
    """The sorted, distinct layer numbers of `L0,L1,...`, each read as llama-quantize reads
    it (std::stoi: "4abc" is 4); a UsageError for one that is not a non-negative int32."""
    layers = []
    for part in text.split(","):
        found = _STOI.match(part)
        layer = int(found.group(1)) if found else -1
        if layer < 0 or layer >= 2**31:
            raise UsageError(f"--prune-layers: invalid layer id {part!r}")
        layers.append(layer)
    return sorted(set(layers))


def prune(bundle: Bundle, layers: Iterable[int]) -> tuple[Bundle, Pruning]:
    """`bundle` without the tensors of `layers`, the later blocks renumbered."""
    prune_list = sorted(set(layers))
    if not prune_list:
        return bundle, Pruning({}, 0)
    mapped: dict[int, str] = {}
    next_id = 0
    new_names = {}
    for name in sorted(bundle.tensors, key=loader_order):
        found = _BLOCK.search(name)
        if found is None:
            new_names[name] = name
            continue
        blk = int(found.group(1))
        if blk not in mapped:
            if blk in prune_list:
                mapped[blk] = ""
            elif blk < prune_list[0]:
                mapped[blk], next_id = str(blk), blk + 1
            else:
                mapped[blk], next_id = str(next_id), next_id + 1
        if mapped[blk]:
            new_names[name] = name[: found.start(1)] + mapped[blk] + name[found.end(1) :]
    out = Bundle(bundle.metadata, format=bundle.format, path=bundle.path,
                 format_info=bundle.format_info)  # fmt: skip
    for name, t in bundle.tensors.items():
        if name in new_names:
            out.add(Tensor(new_names[name], t.shape, t.codec, t.source))
    origin = {new: old for old, new in new_names.items()}
    return out, Pruning(origin, next_id)
