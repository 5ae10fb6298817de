"""The quantization plan: which codec each tensor of a bundle is written with, and why.

The default rules are llama-quantize's (llama.cpp `llama_model_quantize_impl` and
`llama_tensor_get_type`): only tensors whose name ends in "weight" with two or more
dimensions are quantized; norms, expert gates, position and token-type embeddings and a few
small recurrent-model weights are kept; the output tensor (or the token embedding when the
model ties them) gets Q6_K, or Q8_0 when its rows are not a multiple of 256; rows that do
not fit the target's block fall back to a wider codec, and finally to F16.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field

from bundler.bundle import Bundle, Tensor, ValueType
from bundler.codecs import Codec, get
from bundler.errors import UsageError
from bundler.filetypes import FileType, file_type, for_codec
from bundler.presets import HyperParams, Mixture, category, loader_order

#: Tensors llama-quantize never quantizes, by name (llama.cpp `tensor_allows_quantization`,
#: plus the Hugging Face spellings of norms and position/token-type embeddings).
KEEP_PATTERN = re.compile(
    r"_norm\.weight|ffn_gate_inp\.weight|ffn_gate_tid2eid\.weight|altup|laurel"
    r"|per_layer_model_proj|ssm_conv1d|shortconv\.conv\.weight|indexer\.[kq]_proj\.weight"
    r"|time_mix_(first|w0|w1|w2|v0|v1|v2|a0|a1|a2|g1|g2|decay_w1|decay_w2|lerp_fused)\.weight"
    r"|attn_rel_b\.weight|\.position_embd|sam\.pos_embd|sam\.neck\.|sam\.net_|\.rel_pos"
    r"|\.patch_embd|\.patch_merger|a\.rvq\.codebook|mm\.a\.code_embd"
    r"|^position_embd\.weight$|^token_types\.weight$"
    r"|(^|\.)norm\.weight$|LayerNorm|layer_norm|position_embeddings|token_type_embeddings"
)
#: Where a tensor goes when its rows do not fit the wanted codec's block (then F16), as
#: llama.cpp's `tensor_type_fallback` sends them.
FALLBACK = {"q2_k": "q4_0", "q3_k": "q4_0", "q4_k": "q5_0", "q5_k": "q5_1", "q6_k": "q8_0"}
LAST_RESORT = "f16"
#: general.quantization_version written with quantized tensors (ggml's GGML_QNT_VERSION).
QUANTIZATION_VERSION = 2


@dataclass
class PlanOptions:
    """What the user asked for; names follow llama-quantize's flags."""

    type: str | None = None
    tensor_types: Sequence[tuple[str, str]] = ()
    pure: bool = False
    leave_output_tensor: bool = False
    output_tensor_type: str | None = None
    token_embedding_type: str | None = None
    allow_requantize: bool = False


@dataclass(frozen=True)
class Choice:
    """The decision for one tensor."""

    index: int
    name: str
    shape: tuple[int, ...]
    source: Codec
    target: Codec
    #: "copy" (bytes as they are), "quantize", "requantize" (from another block codec),
    #: or "convert" (between element types)
    action: str
    note: str = ""

    @property
    def source_bytes(self) -> int:
        return self.source.facts.nbytes(self.shape)

    @property
    def target_bytes(self) -> int:
        return self.target.facts.nbytes(self.shape)


@dataclass
class Plan:
    """Every tensor's choice plus the metadata the output gets."""

    choices: list[Choice]
    file_type: FileType | None
    metadata_updates: dict[str, tuple[int, ValueType]] = field(default_factory=dict)

    @property
    def source_bytes(self) -> int:
        return sum(c.source_bytes for c in self.choices)

    @property
    def target_bytes(self) -> int:
        return sum(c.target_bytes for c in self.choices)


@dataclass(frozen=True)
class ModelInfo:
    """What the per-tensor rules need to know about the whole model."""

    has_output: bool
    names: tuple[str, ...]
    hparams: HyperParams


def model_info(bundle: Bundle) -> ModelInfo:
    md = bundle.metadata
    arch = str(md.get("general.architecture", ""))

    def number(key: str, default: int = 0) -> int:
        value = md.get(f"{arch}.{key}", default)
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


def quantizable(tensor: Tensor) -> str | None:
    """None when llama-quantize would quantize `tensor`, else why it is kept."""
    if not tensor.name.endswith("weight"):
        return "not a weight"
    if len(tensor.shape) < 2:
        return "1-D"
    if KEEP_PATTERN.search(tensor.name):
        return "kept as llama-quantize keeps it"
    kind = tensor.codec.facts
    if kind.numpy_dtype is not None and not kind.numpy_dtype.startswith(("<f", "bfloat")):
        return f"{tensor.codec.name} is not a float type"
    return None


def _fits(codec: Codec, shape: tuple[int, ...]) -> bool:
    return shape[-1] % codec.facts.block_size == 0


def _with_fallback(want: Codec, shape: tuple[int, ...]) -> tuple[Codec, str]:
    if _fits(want, shape):
        return want, ""
    fallback = get(FALLBACK.get(want.name, LAST_RESORT))
    if not _fits(fallback, shape):
        fallback = get(LAST_RESORT)
    note = f"rows of {shape[-1]} are not a multiple of {want.facts.block_size} for {want.name}"
    return fallback, f"{note}: fallback {fallback.name}"


class _Chooser:
    """Picks the wanted codec of each quantizable tensor, in bundle order
    (llama.cpp `llama_tensor_get_type`)."""

    def __init__(self, options: PlanOptions, ftype: FileType, info: ModelInfo):
        self.options = options
        self.base = ftype.codec
        self.tied = not info.has_output
        self.mixture = Mixture(ftype, info) if not options.pure else None
        self.overrides = [(re.compile(rx), get(c)) for rx, c in options.tensor_types]
        self.token_type = (
            get(options.token_embedding_type) if options.token_embedding_type else None
        )
        self.output_type = get(options.output_tensor_type) if options.output_tensor_type else None

    def want(self, tensor: Tensor) -> tuple[Codec, str]:
        name, shape = tensor.name, tensor.shape
        cat = category(name)
        if self.token_type is not None and cat == "token_embd":
            return self.token_type, "--token-embedding-type"
        if self.output_type is not None and cat == "output":
            return self.output_type, "--output-tensor-type"
        if not self.base.facts.is_block:
            return self.base, ""
        for pattern, codec in self.overrides:
            if pattern.search(name):
                return codec, f"--tensor-type {pattern.pattern}={codec.name}"
        if self.mixture is not None:
            # a tied token embedding takes the output codec inside the mixture only (not with
            # --pure, a matching --tensor-type or a float file type), as in llama.cpp
            if self.output_type is not None and self.tied and cat == "token_embd":
                return self.output_type, "--output-tensor-type"
            return self.mixture.choose(name, shape, self.base)
        return self.base, ""


def make_plan(bundle: Bundle, options: PlanOptions | None = None) -> Plan:
    """Decide every tensor's codec; raises UsageError when requantizing was not allowed."""
    options = options or PlanOptions()
    if options.type is None:
        if options.tensor_types:
            raise UsageError("--tensor-type needs --type")
        choices = [_copy(i, t, "") for i, t in enumerate(bundle.tensors.values())]
        return Plan(choices, None)
    ftype = _file_type(options.type)
    chooser = _Chooser(options, ftype, model_info(bundle))
    tensors = list(bundle.tensors.values())
    # decided in llama-quantize's walk (its counters depend on it); listed in the bundle's order
    walk = sorted(range(len(tensors)), key=lambda i: loader_order(tensors[i].name))
    decided = {i: _decide(i, tensors[i], options, chooser) for i in walk}
    choices = [decided[i] for i in range(len(tensors))]
    _refuse_requantize(choices, options)
    updates = {"general.file_type": (ftype.ftype, ValueType.UINT32)}
    if any(c.target.facts.is_block for c in choices):
        updates["general.quantization_version"] = (QUANTIZATION_VERSION, ValueType.UINT32)
    return Plan(choices, ftype, updates)


def _file_type(name: str) -> FileType:
    try:
        return file_type(name)
    except UsageError:
        codec = get(name)
        found = for_codec(codec)
        if found is None:
            raise UsageError(f"--type {name}: {codec.name} is not a llama.cpp file type") from None
        return found


def _copy(i: int, t: Tensor, note: str) -> Choice:
    return Choice(i, t.name, t.shape, t.codec, t.codec, "copy", note)


def _decide(i: int, t: Tensor, options: PlanOptions, chooser: _Chooser) -> Choice:
    why_not = quantizable(t)
    if why_not is None and options.leave_output_tensor and t.name == "output.weight":
        why_not = "--leave-output-tensor"
    if why_not is not None:
        return _copy(i, t, why_not)
    want, note = chooser.want(t)
    target, fallback_note = _with_fallback(want, t.shape)
    note = "; ".join(n for n in (note, fallback_note) if n)
    if target == t.codec:
        return _copy(i, t, note or f"already {target.name}")
    if t.codec.facts.is_block:
        return Choice(i, t.name, t.shape, t.codec, target, "requantize", note)
    action = "quantize" if target.facts.is_block else "convert"
    return Choice(i, t.name, t.shape, t.codec, target, action, note)


def _refuse_requantize(choices: list[Choice], options: PlanOptions) -> None:
    again = [c for c in choices if c.action == "requantize"]
    if again and not options.allow_requantize:
        names = ", ".join(f"{c.name} ({c.source.name})" for c in again[:5])
        more = f" and {len(again) - 5} more" if len(again) > 5 else ""
        raise UsageError(
            f"{len(again)} tensors are already quantized: {names}{more}. Requantizing loses "
            "accuracy; pass --allow-requantize (allow_requantize=True) to do it anyway"
        )
