"""What a plan needs before it is written: importance weights for the tensors llama-quantize
writes only with them (llama.cpp `tensor_requires_imatrix`: IQ1_S, IQ1_M, IQ2_XXS, IQ2_XS,
IQ2_S, IQ3_XXS, and Q2_K in a Q2_K_S file; never the token embedding or the output tensor),
and an encoder for every codec it encodes to.

Like llama-quantize, a dry run only warns about a missing matrix (`PlanWarning`); writing
refuses before any work with a usage error naming `--imatrix`.
"""

from __future__ import annotations

import warnings

from bundler.bundle import Bundle, BytesSource, Tensor
from bundler.errors import EncoderMissingError, ImportanceRequiredError, PlanWarning
from bundler.plan.filetypes import FileType
from bundler.plan.mixtures import loader_order
from bundler.plan.planner import Choice, Plan, PlanOptions, make_plan
from bundler.plan.rules import needs_importance

#: Tensors named in a message, at most.
_NAMED = 5


def without_importance(plan: Plan) -> list[Choice]:
    """The tensors llama-quantize would refuse to write as the plan says: their codec needs
    importance weights and they get none. Without a matrix that is every quantized tensor
    whose codec needs them; with one, those it has no entry for (a tensor already in that
    codec is then copied as it is, as llama-quantize copies it)."""
    ftype = plan.file_type.name if plan.file_type else None
    needy = [
        c for c in plan.choices
        if not c.kept and needs_importance(c.name, c.target, ftype)
        and c.name not in plan.importance and (c.action != "copy" or not plan.weighted)
    ]  # fmt: skip
    return sorted(needy, key=lambda c: loader_order(c.name))


def missing_encoders(plan: Plan) -> dict[str, list[str]]:
    """The codecs the plan encodes to that bundler can store and copy but not encode, with
    the tensors that would get each."""
    out: dict[str, list[str]] = {}
    for c in plan.choices:
        if c.action != "copy" and not c.target.facts.has_kernels:
            out.setdefault(c.target.name, []).append(c.name)
    return {codec: sorted(names, key=loader_order) for codec, names in out.items()}


def check_writable(plan: Plan, dry_run: bool = False) -> None:
    """Refuse a plan that cannot be written (ImportanceRequiredError, EncoderMissingError,
    both usage errors); in a dry run, warn instead."""
    problems: list[Exception] = []
    needy = without_importance(plan)
    if needy:
        message = _importance_message(plan, needy)
        problems.append(ImportanceRequiredError(message, [c.name for c in needy]))
    missing = missing_encoders(plan)
    if missing:
        problems.append(EncoderMissingError(_encoder_message(plan, missing), sorted(missing)))
    if problems and not dry_run:
        raise problems[0]
    for problem in problems:
        warnings.warn(f"dry run only: {problem}", PlanWarning, stacklevel=3)


def _encoder_message(plan: Plan, missing: dict[str, list[str]]) -> str:
    codecs = ", ".join(sorted(missing))
    each = "; ".join(
        f"{_count(names)} as {codec} ({_names(names)})" for codec, names in missing.items()
    )
    return (
        f"{_asked(plan)} writes {each}, but bundler has no {codecs} encoder yet (it reads and "
        f"copies such tensors); `bundler types` lists the codecs it encodes"
    )


def _names(names: list[str]) -> str:
    more = f" and {len(names) - _NAMED} more" if len(names) > _NAMED else ""
    return ", ".join(names[:_NAMED]) + more


def _count(items: list) -> str:
    return f"{len(items)} tensor{'s' if len(items) != 1 else ''}"


def _asked(plan: Plan) -> str:
    return f"--type {plan.file_type.name}" if plan.file_type else "this plan"


def _importance_message(plan: Plan, needy: list[Choice]) -> str:
    names = _names([f"{c.name} ({c.target.name})" for c in needy])
    codecs = ", ".join(sorted({c.target.name for c in needy}))
    if plan.weighted:
        return (
            f"{_asked(plan)}: the importance matrix has no weights for {_count(needy)} "
            f"written as {codecs}, which llama-quantize refuses to write without them: "
            f"{names}; give --imatrix a matrix computed for this model, without "
            f"--include-weights / --exclude-weights dropping them"
        )
    return (
        f"{_asked(plan)} needs an importance matrix: llama-quantize refuses to write {codecs} "
        f"without one (the result is garbage); {_count(needy)} would get it: "
        f"{names}. Compute one with llama-imatrix and pass --imatrix FILE "
        f"(imatrix= in the library)"
    )


def needs_matrix(ftype: FileType) -> bool:
    """True when llama-quantize refuses to write a llama model whose rows are whole 256-value
    blocks as `ftype` without an importance matrix (on other models its fallbacks may give
    every such tensor a codec that needs none)."""
    return bool(without_importance(_probe_plan(ftype)))


def pending_encoders(ftype: FileType) -> list[str]:
    """The codecs `ftype` writes in such a model that bundler cannot encode yet."""
    return sorted(missing_encoders(_probe_plan(ftype)))


def _probe_plan(ftype: FileType) -> Plan:
    return make_plan(_probe(), PlanOptions(type=ftype.name))


def _probe() -> Bundle:
    """A two-layer llama of 256-wide rows, shapes only (plans never read the bytes)."""
    shapes = {"token_embd.weight": (512, 256), "output.weight": (512, 256)}
    for i in range(2):
        for part in ("attn_q", "attn_k", "attn_v", "attn_output", "ffn_gate", "ffn_up"):
            shapes[f"blk.{i}.{part}.weight"] = (256, 256)
        shapes[f"blk.{i}.ffn_down.weight"] = (256, 512)
    bundle = Bundle({"general.architecture": "llama", "llama.block_count": 2})
    for name, shape in shapes.items():
        bundle.add(Tensor(name, shape, "f32", BytesSource(b"")))
    return bundle
