"""The quantization plan: which codec each tensor of a bundle is written with, and why.

The default rules are llama-quantize's (llama.cpp `llama_model_quantize_impl` and
`llama_tensor_get_type`): only tensors whose name ends in "weight" with two or more
dimensions are quantized; norms, expert gates, position and token-type embeddings and a few
small recurrent-model weights are kept; the output tensor (or the token embedding when the
model ties them) gets Q6_K, or Q8_0 when its rows are not a multiple of 256; rows that do
not fit the target's block fall back to a wider codec, and finally to F16.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from bundler.bundle import Bundle, Tensor, ValueType
from bundler.codecs import Codec, get
from bundler.errors import UsageError
from bundler.importance import ImportanceMatrix, fit, load
from bundler.plan.filetypes import FileType, choose
from bundler.plan.mixtures import Mixture, category, loader_order
from bundler.plan.model import ModelInfo, model_info
from bundler.plan.overrides import updates as override_updates
from bundler.plan.prune import Pruning, parse_layers
from bundler.plan.rules import by_name, quantizable, with_fallback

#: general.quantization_version written with quantized tensors (ggml's GGML_QNT_VERSION).
QUANTIZATION_VERSION = 2


@dataclass
class PlanOptions:
    """What the user asked for; names follow llama-quantize's flags.

    `tensor_types` is a sequence of (regex, codec) pairs (a dict {regex: codec} is taken
    too); the first regex that matches a tensor's name gives its codec. `imatrix` is an
    importance matrix: a path to a file llama-imatrix wrote (GGUF or legacy .dat), a
    mapping {tensor name: weights per column} or a `bundler.importance.ImportanceMatrix`;
    `include_weights` / `exclude_weights` keep only / drop the entries whose name contains
    one of their strings (not both). `override_kv` are llama-quantize's `KEY=TYPE:VALUE`
    metadata overrides (bundler.plan.overrides); `prune_layers` the block numbers dropped
    (bundler.plan.prune).
    """

    type: str | None = None
    tensor_types: Sequence[tuple[str, str]] = ()
    pure: bool = False
    leave_output_tensor: bool = False
    output_tensor_type: str | None = None
    token_embedding_type: str | None = None
    allow_requantize: bool = False
    imatrix: Any = None
    include_weights: Sequence[str] = ()
    exclude_weights: Sequence[str] = ()
    override_kv: Sequence[str] = ()
    prune_layers: Sequence[int] = ()

    def __post_init__(self) -> None:
        self.tensor_types = _tensor_type_pairs(self.tensor_types)
        self.override_kv = _strings(self.override_kv, "override_kv")
        override_updates(self.override_kv)  # a malformed one fails here, before any work
        self.prune_layers = _layers(self.prune_layers)
        self.include_weights = _strings(self.include_weights, "include_weights")
        self.exclude_weights = _strings(self.exclude_weights, "exclude_weights")
        if self.include_weights and self.exclude_weights:
            raise UsageError("--include-weights and --exclude-weights cannot be used together")
        if (self.include_weights or self.exclude_weights) and self.imatrix is None:
            raise UsageError("--include-weights / --exclude-weights need --imatrix")


def _layers(given: Sequence[int] | str) -> list[int]:
    if isinstance(given, str):
        return parse_layers(given)
    layers = list(given)
    if not all(isinstance(x, int) and not isinstance(x, bool) and x >= 0 for x in layers):
        raise UsageError(f"prune_layers: expected non-negative layer numbers, got {layers!r}")
    return sorted(set(layers))


def _strings(given: Sequence[str] | str, what: str) -> list[str]:
    items = [given] if isinstance(given, str) else list(given)
    if not all(isinstance(x, str) and x for x in items):
        raise UsageError(f"{what}: expected non-empty strings, got {items!r}")
    return items


def _tensor_type_pairs(given: Sequence[tuple[str, str]] | Mapping[str, str]) -> list:
    pairs = list(given.items()) if isinstance(given, Mapping) else list(given)
    for pair in pairs:
        if not (isinstance(pair, (tuple, list)) and len(pair) == 2):
            raise UsageError(
                f"tensor_types: expected (regex, codec) pairs or a dict {{regex: codec}}, "
                f"got {pair!r}"
            )
        compile_pattern(pair[0])
    return [(str(rx), codec) for rx, codec in pairs]


def compile_pattern(regex: str) -> re.Pattern[str]:
    """`regex` compiled; a UsageError naming it when it is not a valid regular expression."""
    try:
        return re.compile(regex)
    except (re.error, TypeError) as exc:
        raise UsageError(f"--tensor-type: {regex!r} is not a regular expression: {exc}") from None


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
    #: True when the rules left the tensor as it is (its shape, dtype or name), `note` says why
    kept: bool = False

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
    #: the input's tensor bytes when the choices describe a bundle made from it (affine
    #: groups decoded or made before planning), else None: the choices' own sources
    input_bytes: int | None = None
    #: how a size target was met (bundler.plan.target.Allocation), None without a target
    allocation: Any = None
    #: importance weights (float32, 1-D) of the tensors an importance matrix covers, by name
    importance: dict[str, Any] = field(default_factory=dict)
    #: True when an importance matrix with entries was given (llama-quantize's has_imatrix)
    weighted: bool = False

    @property
    def source_bytes(self) -> int:
        if self.input_bytes is not None:
            return self.input_bytes
        return sum(c.source_bytes for c in self.choices)

    @property
    def target_bytes(self) -> int:
        return sum(c.target_bytes for c in self.choices)

    @property
    def kept(self) -> list[Choice]:
        """The tensors the rules left as they are, each with its reason in `note`."""
        return [c for c in self.choices if c.kept]

    def __repr__(self) -> str:
        ftype = self.file_type.name if self.file_type else None
        return (
            f"Plan(type={ftype!r}, {len(self.choices)} tensors, {len(self.kept)} kept, "
            f"{self.source_bytes:,} -> {self.target_bytes:,} bytes)"
        )


class _Chooser:
    """Picks the wanted codec of each quantizable tensor, in bundle order
    (llama.cpp `llama_tensor_get_type`)."""

    def __init__(self, options: PlanOptions, ftype: FileType, info: ModelInfo, imatrix: bool):
        self.options = options
        self.base = ftype.codec
        self.tied = not info.has_output
        self.mixture = Mixture(ftype, info, imatrix) if not options.pure else None
        self.overrides = [(compile_pattern(rx), get(c)) for rx, c in options.tensor_types]
        self.token_type = (
            get(options.token_embedding_type) if options.token_embedding_type else None
        )
        self.output_type = get(options.output_tensor_type) if options.output_tensor_type else None

    def named(self, name: str) -> bool:
        """True when a --tensor-type regex names the tensor."""
        return any(pattern.search(name) for pattern, _ in self.overrides)

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


def make_plan(
    bundle: Bundle,
    options: PlanOptions | None = None,
    name_rules: bool = True,
    pruning: Pruning | None = None,
) -> Plan:
    """Decide every tensor's codec; raises UsageError when requantizing was not allowed.

    `pruning` says what `bundler.plan.prune.prune` did to `bundle` (its blocks renumbered,
    its metadata still the original model's).

    `name_rules=False` (what `bundler.save` does) lets `pure` and `tensor_types` override
    llama-quantize's name rules: with `pure` every float tensor of two or more dimensions
    gets the codec, and a tensor a `tensor_types` regex names gets its codec, whatever
    their names.
    """
    options = options or PlanOptions()
    if options.type is None:
        given = [
            flag for flag, value in (
                ("--tensor-type (tensor_types=)", options.tensor_types),
                ("--imatrix (imatrix=)", options.imatrix is not None),
                ("--override-kv (override_kv=)", options.override_kv),
                ("--prune-layers (prune_layers=)", options.prune_layers),
            ) if value
        ]  # fmt: skip
        if given:
            raise UsageError(f"{', '.join(given)} needs --type (a codec or file type)")
        choices = [_copy(i, t, "") for i, t in enumerate(bundle.tensors.values())]
        return Plan(choices, None)
    ftype = choose(options.type)
    matrix = None
    if options.imatrix is not None:
        matrix = load(options.imatrix, options.include_weights, options.exclude_weights)
    has_imatrix = matrix is not None and len(matrix) > 0
    kvs = override_updates(options.override_kv)
    # llama.cpp reads the hyperparameters through the overrides
    info = model_info(bundle, {k: v for k, (v, _) in kvs.items()})
    chooser = _Chooser(options, ftype, info, has_imatrix)
    tensors = list(bundle.tensors.values())
    # decided in llama-quantize's walk (its counters depend on it); listed in the bundle's order
    walk = sorted(range(len(tensors)), key=lambda i: loader_order(tensors[i].name))
    decided = {i: _decide(i, tensors[i], options, chooser, name_rules) for i in walk}
    choices = [decided[i] for i in range(len(tensors))]
    refuse_requantize(choices, options)
    updates = {}
    if ftype.ftype is not None:
        updates["general.file_type"] = (ftype.ftype, ValueType.UINT32)
    if any(c.target.facts.is_block for c in choices):
        updates["general.quantization_version"] = (QUANTIZATION_VERSION, ValueType.UINT32)
    updates.update(kvs)
    plan = Plan(choices, ftype, updates, weighted=has_imatrix)
    origin = pruning.origin if pruning else {}
    if has_imatrix:
        _fit_importance(plan, matrix, [origin.get(n, n) for n in bundle.tensors], origin)
    if pruning is not None and pruning.origin:
        arch = info.hparams.arch
        plan.metadata_updates[f"{arch}.block_count"] = (pruning.block_count, ValueType.UINT32)
    return plan


def _fit_importance(
    plan: Plan, matrix: ImportanceMatrix, names: list[str], origin: Mapping[str, str]
) -> None:
    """Give the plan the weights of each tensor whose type changes, note those that get
    none, and add the metadata llama-quantize records for the matrix."""
    changed = [(c.name, c.shape) for c in plan.choices if c.action != "copy"]
    fitted = fit(matrix, changed, names, lambda n: origin.get(n, n))
    plan.importance = fitted.weights
    for i, c in enumerate(plan.choices):
        if c.name in fitted.without:
            note = "; ".join(n for n in (c.note, fitted.without[c.name]) if n)
            plan.choices[i] = dataclasses.replace(c, note=note)
    plan.metadata_updates.update(matrix.metadata())


def _copy(i: int, t: Tensor, note: str) -> Choice:
    return Choice(i, t.name, t.shape, t.codec, t.codec, "copy", note)


def _decide(i: int, t: Tensor, options: PlanOptions, chooser: _Chooser, name_rules: bool) -> Choice:
    why_not = quantizable(t)
    overridden = not name_rules and (options.pure or chooser.named(t.name))
    if why_not is not None and by_name(why_not) and overridden:
        why_not = None
    if why_not is None and options.leave_output_tensor and t.name == "output.weight":
        why_not = "--leave-output-tensor"
    if why_not is not None:
        return Choice(i, t.name, t.shape, t.codec, t.codec, "copy", why_not, kept=True)
    want, note = chooser.want(t)
    target, fallback_note = with_fallback(want, t.shape, t.name)
    return choice_for(i, t, target, "; ".join(n for n in (note, fallback_note) if n))


def choice_for(i: int, t: Tensor, target: Codec, note: str) -> Choice:
    """The choice writing tensor `i` (quantizable) with `target`: its action follows the codecs."""
    if target == t.codec:
        return _copy(i, t, note or f"already {target.name}")
    if t.codec.facts.is_block:
        # decoding to a float type is not requantizing
        action = "requantize" if target.facts.is_block else "dequantize"
        return Choice(i, t.name, t.shape, t.codec, target, action, note)
    action = "quantize" if target.facts.is_block else "convert"
    return Choice(i, t.name, t.shape, t.codec, target, action, note)


def refuse_requantize(choices: list[Choice], options: PlanOptions) -> None:
    """A UsageError when a choice requantizes and `options` do not allow it."""
    again = [c for c in choices if c.action == "requantize"]
    if again and not options.allow_requantize:
        names = ", ".join(f"{c.name} ({c.source.name})" for c in again[:5])
        more = f" and {len(again) - 5} more" if len(again) > 5 else ""
        raise UsageError(
            f"{len(again)} tensors are already quantized: {names}{more}. Requantizing loses "
            "accuracy; pass --allow-requantize (allow_requantize=True) to do it anyway"
        )
