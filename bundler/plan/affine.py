"""The plan's affine stage: before the usual plan, weights already stored as affine groups
(compressed-tensors) are decoded when the user asks for another type, and weights are
replaced by affine groups when the type is an affine codec.

Which tensors are quantized follows the plan's rules (`plan.quantizable`: 2-D weights but
norms and embeddings of position or token type; `--leave-output-tensor`); `--tensor-type
REGEX=CODEC` gives matching tensors another affine codec; a tensor whose rows are not a
multiple of the group size falls back to per-channel scales. Quantizing tensors that are
already quantized (GGML blocks or affine groups) needs `allow_requantize`; decoding affine
groups to F32/F16/BF16 does not.
"""

from __future__ import annotations

import dataclasses
import re
from typing import TYPE_CHECKING, Any

from bundler.bundle import Bundle, Tensor, ValueType
from bundler.codecs.affine.names import SCALE_SUFFIX, looks_affine
from bundler.errors import UsageError
from bundler.plan.filetypes import choose
from bundler.plan.model import model_info
from bundler.plan.overrides import updates as override_updates
from bundler.plan.planner import Plan, PlanOptions, make_plan
from bundler.plan.prune import prune
from bundler.plan.rules import quantizable

if TYPE_CHECKING:  # (the codec and its checkpoint layout are imported where an affine
    # type is asked for: a conversion to a GGML type loads neither)
    from bundler.codecs.affine.codec import AffineCodec


def is_affine(type_name: str | None) -> bool:
    """True when `type_name` names an affine codec (int4, int8:channel, ...)."""
    return isinstance(type_name, str) and looks_affine(type_name)


def native_arguments(codec: str) -> dict[str, Any]:
    """An affine codec as the arguments of a format's `quantize_native` (formats that rewrite
    a model around its own dequantize operator take int8/uint8/int4/uint4 and a layout)."""
    if not is_affine(codec):
        raise UsageError(f"a model rewritten in its own format takes an affine codec, not {codec}")
    from bundler.codecs.affine.codec import AffineCodec

    scheme = AffineCodec(codec).scheme
    return {
        "type": ("" if scheme.symmetric else "u") + f"int{scheme.bits}",
        "per_channel": scheme.granularity == "channel",
        "group_size": scheme.group_size if scheme.granularity == "group" else None,
    }


def plan_bundle(
    bundle: Bundle, options: PlanOptions | None, name_rules: bool = True
) -> tuple[Bundle, Plan]:
    """The bundle to write and its plan, with affine groups decoded or made as asked
    (`name_rules` as for `make_plan`)."""
    if options is None or options.type is None:
        return bundle, make_plan(bundle, options, name_rules)
    input_bytes = sum(t.nbytes for t in bundle.tensors.values())
    pruning = None
    if options.prune_layers:
        bundle, pruning = prune(bundle, options.prune_layers)
    bundle, found = decode_groups(bundle, options, _quantized_target(options))
    if not is_affine(options.type):
        plan = make_plan(bundle, options, name_rules, pruning)
        plan.input_bytes = input_bytes if found else None
        return bundle, plan
    if options.imatrix is not None:
        raise UsageError(
            f"--imatrix weighs GGML block codecs (Q4_0, Q4_K, ...), not the affine {options.type}"
        )
    from bundler.codecs.affine import checkpoint

    chooser = _Chooser(options)
    quantized, codecs = checkpoint.quantize_bundle(bundle, chooser.codec_for)
    if chooser.requantized and not options.allow_requantize:
        names = ", ".join(chooser.requantized[:5])
        more = f" and {len(chooser.requantized) - 5} more" if len(chooser.requantized) > 5 else ""
        raise UsageError(
            f"{len(chooser.requantized)} tensors are already quantized: {names}{more}. "
            "Requantizing loses accuracy; pass --allow-requantize (allow_requantize=True) to "
            "do it anyway"
        )
    plan = make_plan(quantized, None)
    plan.metadata_updates.update(override_updates(options.override_kv))
    if pruning is not None and pruning.origin:
        arch = model_info(quantized).hparams.arch
        plan.metadata_updates[f"{arch}.block_count"] = (pruning.block_count, ValueType.UINT32)
    plan.input_bytes = input_bytes
    origin = {}
    for name, codec in codecs.items():
        source = bundle.tensors[name]
        for piece in checkpoint.pieces(checkpoint.module_of(name), source.shape, codec):
            note = f"{name} {source.codec.name} -> {codec.name}"
            origin[piece.name] = "; ".join([note, *filter(None, [chooser.fallbacks.get(name)])])
    plan.choices = [
        dataclasses.replace(c, action="quantize", note=origin[c.name]) if c.name in origin else c
        for c in plan.choices
    ]
    return quantized, plan


def decode_groups(bundle: Bundle, options: PlanOptions, quantizing: bool) -> tuple[Bundle, dict]:
    """The bundle with its affine groups decoded to floats, and the groups found; a
    UsageError when `quantizing` them again was not allowed."""
    if not any(name.endswith(SCALE_SUFFIX) for name in bundle.tensors):
        return bundle, {}  # (what `checkpoint.groups` starts from)
    from bundler.codecs.affine import checkpoint

    found = checkpoint.groups(bundle)
    if not found:
        return bundle, found
    if quantizing and not options.allow_requantize:
        names = ", ".join(sorted(found)[:5])
        more = f" and {len(found) - 5} more" if len(found) > 5 else ""
        raise UsageError(
            f"{len(found)} weights are already affine-quantized: {names}{more}. "
            "Requantizing loses accuracy; pass --allow-requantize (allow_requantize=True) "
            "to do it anyway, or choose F32/F16/BF16 to decode them"
        )
    return checkpoint.dequantized(bundle, found), found


def _quantized_target(options: PlanOptions) -> bool:
    if is_affine(options.type):
        return True
    return choose(options.type).codec.facts.is_block


class _Chooser:
    def __init__(self, options: PlanOptions):
        from bundler.codecs.affine.codec import AffineCodec

        self.options = options
        self.base = AffineCodec(options.type)
        self.overrides = []
        for regex, name in options.tensor_types:
            if not is_affine(name):
                raise UsageError(
                    f"--tensor-type {regex}={name}: with an affine --type, tensor types are "
                    "affine codecs too (int8, int4:g64, ...)"
                )
            self.overrides.append((re.compile(regex), AffineCodec(name)))
        self.requantized: list[str] = []
        self.fallbacks: dict[str, str] = {}

    def codec_for(self, tensor: Tensor) -> AffineCodec | None:
        if quantizable(tensor) is not None:
            return None
        if self.options.leave_output_tensor and tensor.name in ("output.weight", "lm_head.weight"):
            return None
        codec = next((c for rx, c in self.overrides if rx.search(tensor.name)), self.base)
        s = codec.scheme
        if s.granularity == "group" and tensor.shape[-1] % s.group_size:
            # as GGML types fall back when rows do not fit their blocks
            codec = type(codec)(s.replace(granularity="channel"))
            self.fallbacks[tensor.name] = (
                f"rows of {tensor.shape[-1]} are not a multiple of {s.group_size}: fallback "
                f"{codec.name}"
            )
        if tensor.codec.facts.is_block:
            self.requantized.append(f"{tensor.name} ({tensor.codec.name})")
        return codec
