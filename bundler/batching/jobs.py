"""One conversion of a batch (a `Job`): making them, checking them, running one.

A job is plain data (paths and option values), so it can be sent to another process or a
Ray worker; `run_job` turns it into a result and never raises for a bad model: the typed
error is kept in the result.
"""

from __future__ import annotations

import contextlib
import glob
import os
import time
import warnings
from dataclasses import dataclass, replace
from typing import Any

from bundler.batching.naming import DEFAULT_TEMPLATE, check_template, output_format, output_name
from bundler.batching.results import FAILED, NOT_RUN, OK, PLANNED, SKIPPED, Result
from bundler.batching.targets import target_label
from bundler.errors import EXIT_FAILURE, BundlerError, FileNotFound, OutputExistsError, UsageError

#: Memory one conversion needs at most, whatever the model's size: the interpreter with
#: numpy and the compiled kernels, plus the transcoder's chunks in flight (read, encoded).
BASE_MEMORY = 384 << 20


def conversion_memory() -> int:
    """Bytes of memory one conversion is declared to need (local budget, Ray tasks)."""
    from bundler.transcode import IN_FLIGHT_BYTES

    return BASE_MEMORY + 2 * IN_FLIGHT_BYTES


@dataclass(frozen=True)
class Job:
    """One conversion: `input` quantized with `options` (PlanOptions fields) into `output`."""

    input: str
    output: str
    options: dict[str, Any]
    format: str | None = None
    split_max_size: int | None = None
    aprender: bool = False
    threads: int | None = None
    skip_existing: bool = False
    #: where the job was declared ("config.yaml:12"), for messages
    where: str = ""
    #: a size target instead of a type: the file's bytes, or bits per weight
    #: (bundler.plan.target), and the codecs it may choose from (None: the default ones)
    target_size: int | None = None
    target_bpw: float | None = None
    candidates: str | None = None
    #: a text to measure the importance matrix on (`quantize --text`): its path, tokens
    #: per chunk and chunks (None: llama-imatrix's context, every whole chunk)
    text: str | None = None
    text_context: int | None = None
    text_chunks: int | None = None

    @property
    def targeted(self) -> bool:
        return self.target_size is not None or self.target_bpw is not None

    @property
    def type(self) -> str | None:
        """The type asked for, or the size target's name (target-80M, target-4.5bpw)."""
        if self.targeted:
            return target_label(self.target_size, self.target_bpw)
        return self.options.get("type")


def make_jobs(
    inputs: list[str],
    output_dir: str,
    types: list[str],
    options: dict[str, Any],
    *,
    template: str = DEFAULT_TEMPLATE,
    format: str | None = None,
    where: str = "",
    targets: list[tuple[int | None, float | None]] = (),
    **settings: Any,
) -> list[Job]:
    """One job per input and type, and per input and size target (`targets`: (bytes, None)
    or (None, bits per weight)), each written to `output_dir` under `template`'s name.
    `settings` are the other `Job` fields (split_max_size, aprender, threads, skip_existing,
    candidates)."""
    check_template(template)
    missing = [Job(src, "", {}, where=where) for src in inputs if not os.path.exists(src)]
    if missing:
        raise MissingInputs(missing)
    jobs = []
    for src in inputs:
        fmt = output_format(format, src)
        for t in types:
            dst = os.path.join(output_dir, output_name(template, src, t, fmt))
            opts = dict(options, type=t)
            jobs.append(Job(src, dst, opts, format=format, where=where, **settings))
        for size, bpw in targets:
            dst = os.path.join(output_dir, output_name(template, src, target_label(size, bpw), fmt))
            job = Job(src, dst, dict(options, type=None), format=format, where=where, **settings)
            jobs.append(replace(job, target_size=size, target_bpw=bpw))
    return jobs


def existing_outputs(path: str) -> list[str]:
    """The files already at `path`: itself, or the shards of a split set named after it."""
    if os.path.exists(path):
        return [path]
    stem, dot, ext = path.rpartition(".")
    if not dot:
        return []
    return sorted(glob.glob(f"{glob.escape(stem)}-*-of-*.{ext}"))


def expand_inputs(patterns: list[str]) -> list[str]:
    """Inputs as given, globs expanded (sorted); a glob that matches nothing is an error."""
    found: list[str] = []
    for pattern in patterns:
        if glob.has_magic(pattern):
            matches = sorted(glob.glob(pattern))
            if not matches:
                raise FileNotFound(f"{pattern} (matches no file)")
            found.extend(matches)
        else:
            found.append(pattern)
    return found


def preflight(jobs: list[Job], force: bool) -> None:
    """Every check that needs no conversion, before the first one starts: inputs exist,
    no two jobs write the same output, no output is an input, nothing is overwritten
    without `force` or the job's `skip_existing`."""
    missing = [j for j in jobs if not os.path.exists(j.input)]
    if missing:
        raise MissingInputs(missing)
    seen: dict[str, Job] = {}
    inputs = {os.path.realpath(j.input) for j in jobs}
    for job in jobs:
        key = os.path.realpath(job.output)
        if key in inputs:
            raise UsageError(f"{_at(job)}the output {job.output} is an input; write elsewhere")
        if key in seen:
            other = seen[key]
            raise UsageError(
                f"{_at(job)}{job.input} and {other.input} would both be written to "
                f"{job.output}; use a template with {{stem}} and {{type}}"
            )
        seen[key] = job
    if not force:
        taken = [j for j in jobs if not j.skip_existing and existing_outputs(j.output)]
        if taken:
            names = ", ".join(j.output for j in taken[:5]) + (" ..." if len(taken) > 5 else "")
            raise OutputExistsError(
                f"{len(taken)} output(s) exist: {names} (use --force to overwrite "
                f"or --skip-existing to keep them)"
            )


def _at(job: Job) -> str:
    return f"{job.where}: " if job.where else ""


class MissingInputs(FileNotFound):
    """Inputs of a batch that do not exist (every one is listed)."""

    def __init__(self, jobs: list[Job]):
        super().__init__(jobs[0].input)
        self.paths = list(dict.fromkeys(j.input for j in jobs))
        lines = dict.fromkeys(f"{_at(j)}{j.input}: no such file" for j in jobs)
        self.args = ("\n  ".join(lines),)


def skipped(job: Job) -> Result | None:
    """The result of a job whose output exists and is to be kept, else None."""
    if job.skip_existing:
        found = existing_outputs(job.output)
        if found:
            return Result(job.input, job.output, job.type, SKIPPED, outputs=found)
    return None


def run_job(job: Job, force: bool = False, dry_run: bool = False) -> Result:
    """Convert one job's input (only plan it with `dry_run`); errors become a failed result."""
    done = skipped(job)
    if done is not None:
        return done
    start = time.perf_counter()
    result = Result(job.input, job.output, job.type, PLANNED if dry_run else OK)
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            _convert(job, result, force, dry_run)
        result.warnings = [str(w.message) for w in caught]
    except BundlerError as exc:
        _fail(result, exc, exc.exit_code)
    except OSError as exc:
        from bundler.errors import EXIT_IO

        where = f"{exc.filename}: " if exc.filename else ""
        _fail(result, exc, EXIT_IO, f"{where}{exc.strerror or exc}")
    except MemoryError as exc:
        _fail(result, exc, EXIT_FAILURE, "out of memory")
    except Exception as exc:  # a bug must not stop the other models
        _fail(result, exc, EXIT_FAILURE, f"{type(exc).__name__}: {exc}")
    result.seconds = time.perf_counter() - start
    return result


def _convert(job: Job, result: Result, force: bool, dry_run: bool) -> None:
    from bundler.containers import open_bundle
    from bundler.pipeline import write_bundle
    from bundler.plan import PlanOptions
    from bundler.plan.affine import plan_bundle

    if job.threads:
        from bundler.codecs import set_threads

        set_threads(job.threads)
    native = _native_format(job)
    if native is not None:
        _convert_native(native, job, result, force, dry_run)
        return
    write_options = {"aprender": True} if job.aprender else None
    if job.text is not None:
        job = replace(job, options={**job.options, "imatrix": _measured(job)})
    if job.targeted:
        bundle, plan = _plan_target(job, write_options)
    else:
        bundle, plan = plan_bundle(open_bundle(job.input), PlanOptions(**job.options))
    result.source_bytes, result.target_bytes = plan.source_bytes, plan.target_bytes
    if not dry_run and os.path.dirname(job.output):
        os.makedirs(os.path.dirname(job.output), exist_ok=True)
    report = write_bundle(
        bundle, plan, job.output, format=job.format, force=force or dry_run, dry_run=dry_run,
        split_max_size=job.split_max_size, source_name=job.input, write_options=write_options,
    )  # fmt: skip
    result.format = report.format
    result.outputs = report.outputs
    if plan.allocation is not None:
        result.allocation = _allocation(plan.allocation, None if dry_run else report.outputs)


def _measured(job: Job) -> Any:
    """The importance matrix of the job's input measured over its text."""
    from bundler.importance.measure import DEFAULT_CONTEXT, measure

    if job.options.get("imatrix") is not None:
        raise UsageError(f"{_at(job)}give imatrix or text (which measures one), not both")
    found = measure(
        job.input, job.text, context=job.text_context or DEFAULT_CONTEXT,
        chunks=job.text_chunks, threads=job.threads or os.cpu_count(),
    )  # fmt: skip
    return found.matrix()


def _plan_target(job: Job, write_options: dict[str, Any] | None) -> tuple[Any, Any]:
    """The bundle and plan of a size-targeted job: `quantize --target-size`'s own planning.
    A target the model cannot meet is a UsageError naming where the job was declared."""
    from bundler.containers import open_bundle
    from bundler.pipeline import plan_output
    from bundler.plan import PlanOptions
    from bundler.plan.target import SizeTarget

    key = "target_size" if job.target_size is not None else "target_bpw"
    try:
        return plan_output(
            open_bundle(job.input), PlanOptions(**job.options), job.output, format=job.format,
            target=SizeTarget(job.target_size, job.target_bpw),
            split_max_size=job.split_max_size, write_options=write_options,
            candidates=job.candidates,
        )  # fmt: skip
    except UsageError as exc:
        raise UsageError(f"{_at(job)}{key}: {job.input}: {exc}") from None


def _allocation(allocation: Any, outputs: list[str] | None) -> dict[str, Any]:
    """What a result records of a size target: the target, the predicted and (once
    written) actual file sizes, the codec mix and the predicted error."""
    found = allocation.as_dict()
    found.pop("errors")
    found["actual_bytes"] = sum(os.path.getsize(p) for p in outputs) if outputs else None
    return found


def _native_format(job: Job) -> Any | None:
    """The input's format when it quantizes a model in its own format (rewriting the graph,
    not just the weights) and the job writes that format; None otherwise."""
    from bundler.containers import detect, module

    fmt = module(detect(job.input))
    native = hasattr(fmt, "quantize_native") and (job.format or fmt.NAME) == fmt.NAME
    return fmt if native else None


def _convert_native(fmt: Any, job: Job, result: Result, force: bool, dry_run: bool) -> None:
    from bundler.plan.affine import native_arguments

    if job.split_max_size or job.aprender:
        raise UsageError(f"--split-max-size and --aprender do not apply to {fmt.TITLE} output")
    if job.targeted:
        raise UsageError(
            f"{_at(job)}a size target does not apply to a {fmt.TITLE} model rewritten in its "
            "own format; write GGUF or SafeTensors (`to`, --to)"
        )
    if not dry_run and os.path.dirname(job.output):
        os.makedirs(os.path.dirname(job.output), exist_ok=True)
    report = fmt.quantize_native(
        job.input, job.output, **native_arguments(job.type),
        tensor_types=list(job.options.get("tensor_types") or ()),
        allow_requantize=job.options.get("allow_requantize", False),
        force=force or dry_run, dry_run=dry_run,
    )  # fmt: skip
    result.format = fmt.NAME
    result.source_bytes = report["weight_bytes_before"]
    result.target_bytes = report["weight_bytes_after"]
    result.outputs = report["outputs"]


def _fail(result: Result, exc: BaseException, code: int, message: str | None = None) -> None:
    result.status = FAILED
    result.error = message or str(exc)
    result.error_type = type(exc).__name__
    result.exit_code = code


def not_run(job: Job) -> Result:
    return Result(job.input, job.output, job.type, NOT_RUN)


def worker_threads(jobs_at_once: int) -> int:
    """Kernel threads each of `jobs_at_once` parallel conversions gets: the cores shared."""
    return max(1, (os.cpu_count() or 1) // max(1, jobs_at_once))


def available_memory() -> int | None:
    """Bytes of memory the system can give without swapping (Linux), else None."""
    with contextlib.suppress(OSError, ValueError), open("/proc/meminfo") as f:
        for line in f:
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    return None
