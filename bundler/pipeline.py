"""The conversion pipeline: read a bundle, apply a plan, stream it into any container.

Tensors whose codec does not change are copied as raw bytes. The others are re-encoded a
chunk of rows at a time (bundler.transcode): reading, encoding and writing overlap, and
memory stays bounded by a few chunks whatever the model size.
"""

from __future__ import annotations

import os
import time
import warnings
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np

from bundler.bundle import Bundle, Metadata, Source, Tensor
from bundler.containers import format_for_path, formats, module, open_bundle
from bundler.errors import OutputExistsError, PlanWarning, UsageError
from bundler.plan import Choice, Plan, PlanOptions
from bundler.plan.affine import decode_groups, plan_bundle
from bundler.plan.curves import DEFAULT_SAMPLE_VALUES
from bundler.plan.rules import by_name
from bundler.plan.writable import check_writable
from bundler.transcode import Buffers, TranscodeSource

if TYPE_CHECKING:  # (the size search is imported when a target is given)
    from bundler.plan.target import SizeTarget


class Observer(Protocol):
    """Receives progress while a bundle is written."""

    def tensor_started(self, choice: Choice) -> None: ...

    def advance(self, nbytes: int) -> None: ...


class _ObservedSource(Source):
    def __init__(self, inner: Source, choice: Choice, observer: Observer):
        self.inner, self.choice, self.observer = inner, choice, observer

    def raw(self) -> np.ndarray:
        self.observer.tensor_started(self.choice)
        data = self.inner.raw()
        self.observer.advance(data.size)
        return data

    def iter_raw(self, chunk_bytes: int) -> Iterator[np.ndarray]:
        self.observer.tensor_started(self.choice)
        for chunk in self.inner.iter_raw(chunk_bytes):
            yield chunk
            self.observer.advance(chunk.size)


def apply_plan(bundle: Bundle, plan: Plan, observer: Observer | None = None) -> Bundle:
    """The bundle as the plan wants it written; nothing is read or encoded until written."""
    metadata = Metadata(bundle.metadata.typed_items())
    for key, (value, vtype) in plan.metadata_updates.items():
        metadata.set(key, value, vtype)
    out = Bundle(metadata, format=bundle.format, path=bundle.path, format_info=bundle.format_info)
    buffers = Buffers()
    for choice, tensor in zip(plan.choices, bundle.tensors.values(), strict=True):
        source = tensor.source
        if choice.action != "copy" and choice.target != tensor.codec:
            weights = plan.importance.get(tensor.name)
            source = TranscodeSource(tensor, choice.target, buffers, importance=weights)
        if observer is not None:
            source = _ObservedSource(source, choice, observer)
        out.add(Tensor(tensor.name, tensor.shape, choice.target, source))
    return out


@dataclass
class Report:
    """What a conversion did: every tensor's choice, the sizes and the time taken."""

    source: str
    output: str
    format: str
    plan: Plan
    seconds: float = 0.0
    written: bool = True
    outputs: list[str] = field(default_factory=list)

    @property
    def skipped(self) -> list[tuple[str, str]]:
        """(name, reason) of every tensor the plan left as it is although a type was given."""
        return [(c.name, c.note) for c in self.plan.kept]

    def __repr__(self) -> str:
        plan = self.plan
        ftype = f", type={plan.file_type.name}" if plan.file_type else ""
        done = f"{self.seconds:.2f} s" if self.written else "dry run"
        return (
            f"Report({self.output!r}, format={self.format!r}{ftype}, "
            f"{len(plan.choices)} tensors, {len(self.skipped)} skipped, "
            f"{plan.source_bytes:,} -> {plan.target_bytes:,} bytes, {done})"
        )

    def as_dict(self) -> dict[str, Any]:
        plan = self.plan
        return {
            "source": self.source,
            "output": self.output,
            "outputs": self.outputs,
            "format": self.format,
            "written": self.written,
            "file_type": plan.file_type.name if plan.file_type else None,
            "source_bytes": plan.source_bytes,
            "target_bytes": plan.target_bytes,
            "ratio": plan.source_bytes / plan.target_bytes if plan.target_bytes else None,
            "seconds": self.seconds,
            "mib_per_s": plan.source_bytes / 2**20 / self.seconds if self.seconds else None,
            "tensors": [_choice_dict(c, c.name in plan.importance) for c in plan.choices],
            "skipped": [{"name": name, "reason": why} for name, why in self.skipped],
            "target": plan.allocation.as_dict() if plan.allocation is not None else None,
            "imatrix": _imatrix_dict(plan),
        }


def _imatrix_dict(plan: Plan) -> dict[str, Any] | None:
    """The importance matrix keys the plan records, by their last word, and how many
    tensors are encoded with weights; None without a matrix."""
    keys = {
        k.rsplit(".", 1)[1]: v for k, (v, _) in plan.metadata_updates.items()
        if k.startswith("quantize.imatrix.")
    }  # fmt: skip
    if not keys:
        return None
    return {**keys, "weighted_tensors": len(plan.importance)}


def _choice_dict(c: Choice, weighted: bool) -> dict[str, Any]:
    return {
        "importance": weighted,
        "index": c.index,
        "name": c.name,
        "shape": list(c.shape),
        "from": c.source.name,
        "to": c.target.name,
        "action": c.action,
        "note": c.note,
        "kept": c.kept,
        "source_bytes": c.source_bytes,
        "target_bytes": c.target_bytes,
    }


def _split_groups(bundle: Bundle) -> list[int]:
    """Tensor counts of the input's files, in order: each run of tensors read from one file
    (a shard of a split set) is one group; tensors not read from a file join the run
    before them."""
    counts: list[int] = []
    last = None
    for t in bundle.tensors.values():
        path = getattr(t.source, "path", None)
        if not counts or (path is not None and path != last):
            counts.append(0)
        last = path if path is not None else last
        counts[-1] += 1
    return counts


def _write_options(fmt: str, split_max_size: int | None, extra: dict[str, Any]) -> dict[str, Any]:
    options = dict(extra)
    if split_max_size:
        key = module(fmt).SPLIT_OPTION
        if key is None:
            raise UsageError(f"{fmt} output cannot be split; drop --split-max-size")
        options[key] = int(split_max_size)
    return options


def output_format(dst: str | os.PathLike[str], format: str | None = None) -> str:
    """The format written to `dst`: `format`, else the one its extension names. A usage
    error when `dst` is a directory (but for a SafeTensors model folder) or its extension
    names another format than `format`."""
    dst = os.fspath(dst)
    if os.path.isdir(dst):
        if format is not None and module(format).WRITES_FOLDER:  # a model folder
            return format
        folders = "/".join(n for n in formats() if module(n).WRITES_FOLDER)
        raise UsageError(
            f"the output {dst} is a directory; give a file name (e.g. {dst}/model.gguf), "
            f"or --to {folders} for a model folder"
        )
    if format is None:
        return format_for_path(dst)
    try:
        named = format_for_path(dst)
    except UsageError:  # an extension no format claims: the format says what it is
        return format
    if named != format:
        raise UsageError(
            f"the output {dst} has the {named} extension but the format asked is {format}; "
            f"give it the .{module(format).EXTENSIONS[0]} extension or drop --to (format=)"
        )
    return format


def _check_paths(src: str, dst: str, force: bool) -> None:
    same = os.path.abspath(src) == os.path.abspath(dst)
    if not same and os.path.exists(dst) and os.path.exists(src):
        same = os.path.samefile(src, dst)
    if same:
        raise UsageError(f"the output {dst} is the input; write to another path")
    if not force and os.path.exists(_target(dst)):
        raise OutputExistsError(_target(dst))


def _target(dst: str) -> str:
    """The file written for `dst`: a model folder's model.safetensors, else `dst`."""
    return os.path.join(dst, "model.safetensors") if os.path.isdir(dst) else dst


def write_bundle(
    bundle: Bundle,
    plan: Plan,
    dst: str | os.PathLike[str],
    *,
    format: str | None = None,
    force: bool = False,
    dry_run: bool = False,
    split_max_size: int | None = None,
    observer: Observer | None = None,
    source_name: str = "<arrays>",
    write_options: dict[str, Any] | None = None,
    keep_split: bool = False,
) -> Report:
    """Write `bundle` as `plan` says; with `dry_run` only the report is made. `keep_split`
    writes each tensor into the shard of the output matching the input file it came from
    (llama-quantize's `--keep-split`)."""
    dst = os.fspath(dst)
    fmt = output_format(dst, format)
    options = _write_options(fmt, split_max_size, write_options or {})
    if keep_split:
        key = getattr(module(fmt), "KEEP_SPLIT_OPTION", None)
        if key is None:
            raise UsageError(f"{fmt} output cannot keep the input's split; drop --keep-split")
        if split_max_size:
            raise UsageError("--keep-split and --split-max-size cannot be used together")
        options[key] = _split_groups(bundle)
    check_writable(plan, dry_run)
    report = Report(source_name, dst, fmt, plan, written=not dry_run)
    if dry_run:
        return report
    if not force and os.path.exists(_target(dst)):
        raise OutputExistsError(_target(dst))
    start = time.perf_counter()
    module(fmt).write(apply_plan(bundle, plan, observer), dst, force=force, **options)
    report.seconds = time.perf_counter() - start
    report.outputs = _outputs(dst)
    return report


def _outputs(dst: str) -> list[str]:
    if os.path.isdir(dst):
        return sorted(os.path.join(dst, n) for n in os.listdir(dst))
    if os.path.exists(dst):
        return [dst]
    directory, base = os.path.split(os.path.abspath(dst))
    stem = base.rsplit(".", 1)[0]
    names = (n for n in os.listdir(directory) if n.startswith((stem + "-", stem + ".")))
    return sorted(os.path.join(directory, n) for n in names if n != base)


def planned_size(
    bundle: Bundle, plan: Plan, dst: str, fmt: str, write_options: dict[str, Any]
) -> int:
    """The exact bytes writing `bundle` as `plan` says to `dst` in `fmt` would write."""
    _size_known(fmt)
    return module(fmt).planned_size(apply_plan(bundle, plan), dst, **write_options)


def _size_known(fmt: str) -> None:
    if not hasattr(module(fmt), "planned_size"):
        able = ", ".join(n for n in formats() if hasattr(module(n), "planned_size"))
        raise UsageError(
            f"a size target needs an output whose size is known up front ({able}), not {fmt}"
        )


def plan_output(
    bundle: Bundle,
    options: PlanOptions | None,
    dst: str | os.PathLike[str],
    *,
    format: str | None = None,
    target: SizeTarget | None = None,
    split_max_size: int | None = None,
    write_options: dict[str, Any] | None = None,
    column_weights: dict[str, Any] | None = None,
    candidates: Any = None,
    sample_values: int | None = None,
    progress: Any = None,
    sensitivity: bool = False,
) -> tuple[Bundle, Plan]:
    """The bundle to write to `dst` and its plan: the planner's, or with a size `target` the
    allocation that fits it (bundler.plan.target) in the format written, with its options;
    `column_weights`, `candidates`, `sample_values` and `progress` as `plan_to_target`
    takes them (`candidates` as its `codecs`, `sensitivity` as its `estimate_sensitivity`)."""
    if target is None:
        return plan_bundle(bundle, options)
    from bundler.plan.target import plan_to_target

    dst = os.fspath(dst)
    fmt = output_format(dst, format)
    opts = _write_options(fmt, split_max_size, write_options or {})
    _size_known(fmt)
    options = options or PlanOptions()
    input_bytes = sum(t.nbytes for t in bundle.tensors.values())
    bundle, found = decode_groups(bundle, options, True)
    plan = plan_to_target(
        bundle, options, target, lambda p: planned_size(bundle, p, dst, fmt, opts),
        column_weights=column_weights, codecs=candidates, progress=progress,
        sample_values=sample_values or DEFAULT_SAMPLE_VALUES, estimate_sensitivity=sensitivity,
    )  # fmt: skip
    plan.input_bytes = input_bytes if found else None
    return bundle, plan


def _file_to_file(
    src: str | os.PathLike[str],
    dst: str | os.PathLike[str],
    options: PlanOptions | None,
    *,
    format: str | None,
    force: bool,
    dry_run: bool,
    split_max_size: int | None,
    observer: Observer | None,
    keep_split: bool = False,
    **planning: Any,
) -> Report:
    src, dst = os.fspath(src), os.fspath(dst)
    _check_paths(src, dst, force or dry_run)
    bundle, plan = plan_output(
        open_bundle(src), options, dst, format=format, split_max_size=split_max_size, **planning
    )
    return write_bundle(
        bundle, plan, dst, format=format, force=force, dry_run=dry_run,
        split_max_size=split_max_size, observer=observer, source_name=src,
        keep_split=keep_split,
    )  # fmt: skip


def quantize(
    src: str | os.PathLike[str],
    dst: str | os.PathLike[str],
    type: str | None = None,
    *,
    format: str | None = None,
    force: bool = False,
    dry_run: bool = False,
    split_max_size: int | None = None,
    observer: Observer | None = None,
    target_size: str | int | None = None,
    target_bpw: float | None = None,
    column_weights: dict[str, Any] | None = None,
    candidates: Any = None,
    sample_values: int | None = None,
    progress: Any = None,
    keep_split: bool = False,
    sensitivity: bool = False,
    **plan_options: Any,
) -> Report:
    """Quantize the model file `src` into `dst` (format from `format` or the extension).

    `type` is a codec or llama.cpp file type (q4_0, Q4_K_M, ...; default q8_0);
    `plan_options` are the fields of `PlanOptions` (tensor_types, pure, allow_requantize,
    imatrix, include_weights, exclude_weights, override_kv, prune_layers, ...).
    `keep_split` writes a split input into the same shards (GGUF). With `target_size`
    (bytes, or text such as "80M" or "75MiB") or `target_bpw` (bits per weight of the whole
    file) instead of `type`, each tensor's codec is chosen to fit the target with the least
    error (bundler.plan.target; `Report.plan.allocation` says how): `column_weights` maps
    tensor names to per-column importance weights, `candidates` names the codecs to choose
    from (default: every GGML block codec bundler encodes, BF16 and F16), `sample_values`
    caps the values measured per tensor (default `bundler.plan.target.DEFAULT_SAMPLE_VALUES`;
    sizes are exact whatever it is), and `progress(name, n_values, total_values)` is called
    as each tensor is measured. `sensitivity=True` weighs each tensor's error, when no
    importance matrix or `column_weights` is given, by the sensitivity estimated from the
    model's weights (bundler.plan.sensitivity; measured to raise KL divergence on SmolLM2,
    so it is off by default).
    """
    target = None
    if target_size is not None or target_bpw is not None:
        from bundler.plan.target import SizeTarget

        target = SizeTarget.parse(target_size, target_bpw)
    elif type is None:
        type = "q8_0"
    options = PlanOptions(type=type, **plan_options)
    return _file_to_file(
        src, dst, options, format=format, force=force, dry_run=dry_run,
        split_max_size=split_max_size, observer=observer, keep_split=keep_split, target=target,
        column_weights=column_weights, candidates=candidates, sample_values=sample_values,
        progress=progress, sensitivity=sensitivity,
    )  # fmt: skip


def convert(
    src: str | os.PathLike[str],
    dst: str | os.PathLike[str],
    *,
    format: str | None = None,
    force: bool = False,
    dry_run: bool = False,
    split_max_size: int | None = None,
    observer: Observer | None = None,
) -> Report:
    """Rewrite `src` in another container format; every tensor is copied bit for bit."""
    return _file_to_file(
        src, dst, None, format=format, force=force, dry_run=dry_run,
        split_max_size=split_max_size, observer=observer,
    )  # fmt: skip


def bundle_from_arrays(arrays: dict[str, Any], metadata: Any = None) -> Bundle:
    """A bundle of `arrays` (name -> numpy array, in order) with `metadata`."""
    bundle = Bundle(metadata if isinstance(metadata, Metadata) else Metadata(metadata or {}))
    for name, array in arrays.items():
        bundle.add(Tensor.from_array(name, np.asarray(array)))
    return bundle


def save(
    data: Bundle | dict[str, Any],
    path: str | os.PathLike[str],
    metadata: Any = None,
    codec: str | None = None,
    *,
    format: str | None = None,
    force: bool = False,
    observer: Observer | None = None,
    **plan_options: Any,
) -> Report:
    """Build a bundle from a dict of arrays (or take a bundle), quantize it and write it.

    `metadata` entries are added (plain values are typed as gguf's writer types them; pass
    `bundler.Value` to choose). `codec` is a codec or file type applied as `quantize`
    applies it (llama-quantize's rules); with `pure=True` every float tensor of two or more
    dimensions gets it whatever its name, and a tensor a `tensor_types` regex names gets its
    codec whatever its name. 1-D and integer tensors are always kept. `Report.skipped` lists
    every tensor left as it is; a `PlanWarning` names those kept for their name. An existing
    `path` is an `OutputExistsError` unless `force=True`, as for `quantize` and `convert`.
    """
    bundle = data if isinstance(data, Bundle) else bundle_from_arrays(data)
    for key, value in Metadata(metadata or {}).typed_items():
        bundle.metadata[key] = value
    options = PlanOptions(type=codec, **plan_options)
    bundle, plan = plan_bundle(bundle, options, name_rules=False)
    _warn_kept(plan, codec)
    return write_bundle(bundle, plan, path, format=format, force=force, observer=observer)


def _warn_kept(plan: Plan, codec: str | None) -> None:
    kept = [c for c in plan.kept if by_name(c.note)]
    if codec is None or not kept:
        return
    names = ", ".join(f"{c.name} ({c.note})" for c in kept[:5])
    more = f" and {len(kept) - 5} more" if len(kept) > 5 else ""
    warnings.warn(
        f"codec {codec!r}: {len(kept)} tensor(s) left as they are: {names}{more}; "
        "pass pure=True or tensor_types to quantize them (Report.skipped lists every tensor "
        "left as it is)",
        PlanWarning,
        stacklevel=2,
    )
