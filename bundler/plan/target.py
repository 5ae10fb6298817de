"""A size target: each tensor's codec chosen so that the written file fits in a number of
bytes (`--target-size`) or bits per weight (`--target-bpw`) while the total error is as small
as this allocation can make it.

The problem and how it is solved:

1. The tensors the planner's rules would quantize (`plan.rules.quantizable`, minus
   `--leave-output-tensor`) are free; every other tensor is written as it is. A tensor a
   `--tensor-type`, `--output-tensor-type` or `--token-embedding-type` names is pinned to
   that codec (with the planner's shape fallback). The output tensor and the token
   embedding are otherwise free like any other weight: their error counts as theirs does.
2. Each free tensor's candidates are `CANDIDATES` whose block divides its rows (the K-quants
   need rows of a multiple of 256, the legacy blocks of 32; the float codecs always fit, so
   a tensor no block fits can still be written, as the planner's last resort F16), plus its
   own float codec (a copy, no error).
3. Each candidate's error is measured: the tensor's rows are encoded and decoded with it
   and the error is the sensitivity-weighted squared error
   `E = s_t * sum_ij w_j (W_ij - Q(W)_ij)^2`. With per-column weights `w` (an importance
   matrix: the mean squared activation entering each column) this is the expected squared
   error of the tensor's output `W x` over those activations, `E||(W - Q(W)) x||^2`, the
   quantity llama.cpp's importance matrix weights its own quantization with; `quantize
   --text` measures one by running the model (`bundler.importance.measure`). Without a
   matrix (and without the caller's `column_weights` / `sensitivity`), `w = 1` and
   `s_t = 1`: the expectation for uncorrelated unit-variance inputs, every tensor alike.
   `estimate_sensitivity=True` estimates `w` and `s_t` from the model's own weights
   instead (`bundler.plan.sensitivity`); measured with llama-perplexity on SmolLM2 it
   raised the KL divergence of the result (the README has the figures), so it is off by
   default. A free tensor the weights do not
   cover (an importance matrix has no entry for the token embedding) takes every `w_j`
   equal to the mean weight of the tensors they cover, so that all errors stay on one
   scale. A tensor of more than
   `sample_values` values is measured on a sample of its rows (drawn without replacement
   by a generator seeded from `SEED` and the tensor name: the same rows every run) and the
   sum scaled by rows / sampled rows. Memory is bounded by the sample, whatever the model.
4. Sizes are not estimated: a candidate's bytes are the codec's facts for the tensor's
   shape, and the whole file's size comes from the output format's own layout code
   (`planned_size`: header, metadata, tensor index, alignment padding), so the prediction
   is the size of the file that is written.
5. The allocation minimises the sum of the tensors' errors subject to the sum of their
   bytes fitting the budget (the target minus everything else in the file). It is the
   Lagrangian relaxation solved greedily on the lower convex hull of each tensor's
   (bytes, error) curve: every tensor starts at its smallest candidate, then the hull step
   with the largest error reduction per added byte is taken while it fits (a step that
   does not fit ends that tensor's climb). Every allocation this reaches is optimal for the
   bytes it spends (the Lagrangian optimum for the multiplier of the last step taken). The
   bytes left over are then spent by a second greedy pass over all candidates (hull or
   not): the largest error reduction that still fits, repeated. Finally the file's exact
   size is computed; should layout overhead that depends on the codecs (alignment padding,
   header text) push it over the target, the budget shrinks by the excess and the
   allocation is made again.

The curves (steps 2-3) are `bundler.plan.curves`, the allocation (step 5)
`bundler.plan.allocate`; this module makes the plan around them.

`--target-bpw B` is the target `floor(B * n / 8)` bytes, `n` being the number of values in
every tensor of the output (bits per weight of the whole file, header included). A target
below the smallest file the candidates can make is a `UsageError` giving that size.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from bundler.bundle import Bundle, Tensor, ValueType
from bundler.codecs import Codec, get
from bundler.errors import UsageError
from bundler.importance import fit, load
from bundler.plan.allocate import allocate
from bundler.plan.curves import (
    DEFAULT_SAMPLE_VALUES,
    Curve,
    candidate_codecs,
    candidates,
    measure,
)
from bundler.plan.filetypes import FILE_TYPES, FileType
from bundler.plan.mixtures import category
from bundler.plan.planner import (
    QUANTIZATION_VERSION,
    Choice,
    Plan,
    PlanOptions,
    choice_for,
    compile_pattern,
    refuse_requantize,
)
from bundler.plan.rules import quantizable, with_fallback
from bundler.plan.sensitivity import estimate
from bundler.sizes import parse_size

#: Times the allocation is redone when codec-dependent layout overhead overshoots.
_RETRIES = 8


@dataclass(frozen=True)
class SizeTarget:
    """A file size in bytes, or bits per weight of the whole file."""

    size: int | None = None
    bpw: float | None = None

    def __post_init__(self) -> None:
        if (self.size is None) == (self.bpw is None):
            raise UsageError("give one of --target-size (target_size=) and --target-bpw")
        if self.bpw is not None and not (math.isfinite(self.bpw) and self.bpw > 0):
            raise UsageError(f"--target-bpw must be a positive number, got {self.bpw!r}")

    @classmethod
    def parse(cls, size: str | int | None = None, bpw: float | str | None = None) -> SizeTarget:
        """From `--target-size` text (500M, 80MiB, 123456) or `--target-bpw` (4.5)."""
        if bpw is not None:
            try:
                bpw = float(bpw)
            except (TypeError, ValueError):
                raise UsageError(f"--target-bpw: not a number: {bpw!r}") from None
        return cls(parse_size(size) if size is not None else None, bpw)

    def bytes_for(self, n_values: int) -> int:
        """The target in bytes for a file of `n_values` values."""
        if self.size is not None:
            return self.size
        return int(self.bpw * n_values // 8)

    def describe(self, nbytes: int) -> str:
        """The target as people gave it, with `nbytes` (its bytes) for bits per weight."""
        if self.size is not None:
            return f"{self.size:,} bytes"
        return f"{self.bpw:g} bits per weight ({nbytes:,} bytes)"


@dataclass
class Allocation:
    """How a size target was met: what `--dry-run` shows."""

    target: SizeTarget
    target_bytes: int
    #: the exact size of the file the plan writes
    predicted_bytes: int
    #: the smallest and largest files the candidates can make
    minimum_bytes: int
    maximum_bytes: int
    #: sum of the chosen candidates' measured errors, and the same relative to the signal
    predicted_error: float
    relative_error: float
    #: error of every free tensor (by name) as chosen
    errors: dict[str, float] = field(default_factory=dict)
    #: codec name -> number of tensors written with it (free, pinned and kept alike)
    mix: dict[str, int] = field(default_factory=dict)
    free_tensors: int = 0
    sampled_tensors: int = 0
    weighted: bool = False
    #: where the errors' weights came from: "importance matrix" (read from a file),
    #: "importance matrix measured over TEXT" (`quantize --text`), "estimated from the
    #: weights" (bundler.plan.sensitivity), "given" (the library's arguments) or "none"
    sensitivity: str = "none"

    def as_dict(self) -> dict[str, Any]:
        return {
            "target_size": self.target.size,
            "target_bpw": self.target.bpw,
            "target_bytes": self.target_bytes,
            "predicted_bytes": self.predicted_bytes,
            "minimum_bytes": self.minimum_bytes,
            "maximum_bytes": self.maximum_bytes,
            "predicted_error": self.predicted_error,
            "relative_error": self.relative_error,
            "mix": dict(sorted(self.mix.items())),
            "free_tensors": self.free_tensors,
            "sampled_tensors": self.sampled_tensors,
            "column_weights": self.weighted,
            "sensitivity": self.sensitivity,
            "errors": dict(self.errors),
        }


class _Pins:
    """The codecs the user fixed for some tensors (--tensor-type, --output-tensor-type,
    --token-embedding-type)."""

    def __init__(self, options: PlanOptions):
        self.rules = [(compile_pattern(rx), get(c)) for rx, c in options.tensor_types]
        self.output = get(options.output_tensor_type) if options.output_tensor_type else None
        self.token = get(options.token_embedding_type) if options.token_embedding_type else None

    def codec(self, name: str) -> tuple[Codec, str] | None:
        cat = category(name)
        if self.token is not None and cat == "token_embd":
            return self.token, "--token-embedding-type"
        if self.output is not None and cat == "output":
            return self.output, "--output-tensor-type"
        for pattern, codec in self.rules:
            if pattern.search(name):
                return codec, f"--tensor-type {pattern.pattern}={codec.name}"
        return None


def _check_options(options: PlanOptions) -> None:
    if options.type is not None:
        raise UsageError(
            "a size target chooses every tensor's codec: drop --type (type=), or pin some "
            "tensors with --tensor-type / --output-tensor-type / --token-embedding-type"
        )
    if options.pure:
        raise UsageError("--pure (pure=) and a size target exclude each other")
    if options.prune_layers:
        raise UsageError("--prune-layers (prune_layers=) and a size target exclude each other")


@dataclass
class TargetImportance:
    """What an importance matrix (`options.imatrix`) gives a size target: the weights of
    each quantizable tensor it covers (for the weighted encoders), those of them that weigh
    one column each (for the measured errors), and the metadata llama-quantize records."""

    weights: dict[str, np.ndarray]
    column_weights: dict[str, np.ndarray]
    metadata: dict[str, Any]


def target_importance(bundle: Bundle, options: PlanOptions) -> TargetImportance | None:
    """The importance matrix of `options` fitted to the tensors a target may quantize;
    None without one (or with one left empty by --include/--exclude-weights)."""
    if options.imatrix is None:
        return None
    matrix = load(options.imatrix, options.include_weights, options.exclude_weights)
    if not len(matrix):
        return None
    tensors = [t for t in bundle.tensors.values() if quantizable(t) is None]
    weights = fit(matrix, [(t.name, t.shape) for t in tensors], bundle.tensors).weights
    columns = {n: w for n, w in weights.items() if w.size == bundle.tensors[n].shape[-1]}
    return TargetImportance(weights, columns, matrix.metadata())


def plan_to_target(
    bundle: Bundle,
    options: PlanOptions,
    target: SizeTarget,
    size_of: Callable[[Plan], int],
    *,
    column_weights: Mapping[str, np.ndarray] | None = None,
    sensitivity: Mapping[str, float] | None = None,
    sample_values: int = DEFAULT_SAMPLE_VALUES,
    codecs: Sequence[str] | None = None,
    progress: Callable[[str, int, int], None] | None = None,
    estimate_sensitivity: bool = False,
) -> Plan:
    """The plan that fits `bundle` in `target` with the least measured error.

    `size_of(plan)` is the exact size of the file `plan` writes (the output format's
    layout). `column_weights` maps tensor names to one non-negative weight per column (an
    importance matrix); `sensitivity` maps tensor names to a factor on their error (1 when
    absent). With `estimate_sensitivity` and none of these nor an importance matrix, both
    are estimated from the model's weights (`bundler.plan.sensitivity`). `codecs`
    names the candidates (default `CANDIDATES`). `progress(name, n_values, total_values)` is
    called after each tensor is measured.
    """
    _check_options(options)
    if isinstance(sample_values, bool) or not isinstance(sample_values, int) or sample_values < 1:
        raise UsageError(f"sample_values must be a positive integer, got {sample_values!r}")
    allowed = candidate_codecs(codecs)
    matrix = target_importance(bundle, options)
    if matrix is not None and column_weights is None:
        column_weights = matrix.column_weights
    source = "importance matrix" if matrix is not None else "given" if column_weights else "none"
    measured = options.imatrix
    if matrix is not None and getattr(measured, "path", "") is None and measured.datasets:
        source = f"importance matrix measured over {measured.datasets[0]}"
    estimated = False
    if not column_weights and not sensitivity and estimate_sensitivity:
        found = estimate(bundle)
        if found.column_weights:
            column_weights, sensitivity = found.column_weights, found.factors
            source, estimated = "estimated from the weights", True
    column_weights = column_weights or {}
    sensitivity = sensitivity or {}
    pins = _Pins(options)
    tensors = list(bundle.tensors.values())
    fixed: dict[int, Choice] = {}
    free: list[int] = []
    for i, t in enumerate(tensors):
        why_not = quantizable(t)
        if why_not is None and options.leave_output_tensor and t.name == "output.weight":
            why_not = "--leave-output-tensor"
        pinned = pins.codec(t.name) if why_not is None else None
        if why_not is not None:
            fixed[i] = Choice(i, t.name, t.shape, t.codec, t.codec, "copy", why_not, kept=True)
        elif pinned is not None:
            codec, note = with_fallback(pinned[0], t.shape, t.name)
            fixed[i] = choice_for(i, t, codec, "; ".join(filter(None, (pinned[1], note))))
        else:
            free.append(i)
    # a free tensor already in blocks would be requantized by any other block codec
    refuse_requantize([*fixed.values(), *(_requantized(i, tensors[i]) for i in free)], options)
    curves: list[Curve] = []
    total = sum(tensors[i].n_values for i in free)
    unweighted = _unweighted_scale(column_weights, [tensors[i].name for i in free])
    for i in free:
        t = tensors[i]
        weights = column_weights.get(t.name)
        scale = 1.0 if weights is not None else unweighted
        curve = measure(
            t, candidates(t, allowed), column_weights=weights,
            sensitivity=float(sensitivity.get(t.name, 1.0)) * scale,
            sample_values=sample_values, index=i, weighted_encoding=not estimated,
        )  # fmt: skip
        curves.append(curve)
        if progress is not None:
            progress(t.name, t.n_values, total)

    def build(pick: Sequence[int]) -> Plan:
        plan = _plan(tensors, fixed, curves, pick)
        if matrix is not None:  # encoded by the weighted quantizers; its keys are recorded
            plan.importance = matrix.weights
            plan.weighted = bool(matrix.metadata)
            plan.metadata_updates.update(matrix.metadata)
        return plan

    n_values = sum(t.n_values for t in tensors)
    want = target.bytes_for(n_values)
    smallest = build([0] * len(curves))
    minimum = size_of(smallest)
    maximum = size_of(build([_best(c) for c in curves]))
    if want < minimum:
        raise UsageError(
            f"size target {target.describe(want)} is below the smallest file "
            f"reachable: {minimum:,} bytes ({minimum / 1e6:.2f} MB, {minimum * 8 / n_values:.3f} "
            f"bits per weight) with every quantizable tensor at its smallest codec"
        )
    overhead = minimum - sum(c.points[0].nbytes for c in curves)
    budget = want - overhead
    # the smallest allocation always fits (checked above): it is the last resort
    pick, plan, size = [0] * len(curves), smallest, minimum
    for _ in range(_RETRIES):
        try:
            tried = allocate(curves, budget)
        except ValueError:  # the overhead grew past the smallest points' room
            break
        tried_plan = build(tried)
        tried_size = size_of(tried_plan)
        if tried_size <= want:
            pick, plan, size = tried, tried_plan, tried_size
            break
        budget -= tried_size - want
    error = sum(c.points[k].error for c, k in zip(curves, pick, strict=True))
    signal = sum(c.signal for c in curves)
    plan.allocation = Allocation(
        target=target,
        target_bytes=want,
        predicted_bytes=size,
        minimum_bytes=minimum,
        maximum_bytes=maximum,
        predicted_error=error,
        relative_error=error / signal if signal else 0.0,
        errors={c.name: c.points[k].error for c, k in zip(curves, pick, strict=True)},
        mix=dict(Counter(c.target.name for c in plan.choices)),
        free_tensors=len(curves),
        sampled_tensors=sum(c.sampled_rows < c.rows for c in curves),
        weighted=bool(column_weights),
        sensitivity=source,
    )
    return plan


def _requantized(i: int, t: Tensor) -> Choice:
    """What choosing another block codec for `t` would be (a requantize when `t` is in blocks)."""
    other = get("q8_0" if t.codec.name != "q8_0" else "q4_0")
    return choice_for(i, t, other if t.codec.facts.is_block else t.codec, "")


def _unweighted_scale(column_weights: Mapping[str, np.ndarray], names: list[str]) -> float:
    """The column weight assumed for a free tensor the importance matrix does not cover (the
    token embedding, typically): the mean weight of those it covers, so that weighted and
    unweighted tensors' errors stay on one scale. 1 without column weights."""
    means = [float(np.mean(column_weights[n])) for n in names if n in column_weights]
    means = [m for m in means if math.isfinite(m) and m > 0]
    return float(np.mean(means)) if means else 1.0


def _best(curve: Curve) -> int:
    return min(
        range(len(curve.points)), key=lambda k: (curve.points[k].error, curve.points[k].nbytes)
    )


def _plan(
    tensors: list[Tensor], fixed: dict[int, Choice], curves: Sequence[Curve], pick: Sequence[int]
) -> Plan:
    choices = dict(fixed)
    for c, k in zip(curves, pick, strict=True):
        p = c.points[k]
        note = f"size target: {p.codec.name}, error {p.error:.4g}"
        choices[c.index] = choice_for(c.index, tensors[c.index], p.codec, note)
    ordered = [choices[i] for i in range(len(tensors))]
    ftype = _file_type(ordered)
    updates = {}
    if ftype is not None and ftype.ftype is not None:
        updates["general.file_type"] = (ftype.ftype, ValueType.UINT32)
    if any(c.target.facts.is_block for c in ordered):
        updates["general.quantization_version"] = (QUANTIZATION_VERSION, ValueType.UINT32)
    return Plan(ordered, ftype, updates)


def _file_type(choices: list[Choice]) -> FileType | None:
    """The file type naming a mix: that of the codec holding the most quantized values (its
    plain file type, else its _M mixture: Q4_K -> Q4_K_M), as llama.cpp only reads
    `general.file_type` to describe a file."""
    values = Counter()
    for c in choices:
        if not c.kept:
            values[c.target.name] += math.prod(c.shape)
    if not values:
        return None
    top = values.most_common(1)[0][0]
    named = [f for f in FILE_TYPES if f.base == top]
    for f in named:
        if f.name.lower() == top or f.name.endswith("_M"):
            return f
    return named[0] if named else None
