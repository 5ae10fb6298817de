"""One conversion of a batch (a `Job`), what became of it (a `Result`), and running one.

A job is plain data (paths and option values), so it can be sent to another process or a
Ray worker; `run_job` turns it into a result and never raises for a bad model: the typed
error is kept in the result.
"""

from __future__ import annotations

import contextlib
import glob
import os
import string
import time
import warnings
from dataclasses import asdict, dataclass, field
from typing import Any

from bundler.errors import (
    EXIT_FAILURE,
    EXIT_OK,
    BundlerError,
    FileNotFound,
    OutputExistsError,
    UsageError,
)

#: quantize-rs's `--bits` as a codec: the GGML block codec of that width, whose scales are
#: per 32 values of a row (finer than quantize-rs's per-channel scales).
BITS_TYPES = {4: "Q4_0", 8: "Q8_0"}
#: quantize-rs's default width when nothing names a type.
DEFAULT_BITS = 8
#: The default output-name template.
DEFAULT_TEMPLATE = "{stem}-{type}.{ext}"
#: Fields an output-name template may use.
TEMPLATE_FIELDS = {
    "stem": "the input's file name without its extension (a directory's name)",
    "name": "the input's file name",
    "parent": "the name of the input's directory",
    "type": "the output type as written, upper case (Q4_K_M)",
    "format": "the output format (gguf, safetensors, apr)",
    "ext": "the output format's file extension",
}
#: Memory one conversion needs at most, whatever the model's size: the interpreter with
#: numpy and the compiled kernels, plus the transcoder's chunks in flight (read, encoded).
BASE_MEMORY = 384 << 20


def conversion_memory() -> int:
    """Bytes of memory one conversion is declared to need (local budget, Ray tasks)."""
    from bundler.transcode import IN_FLIGHT_BYTES

    return BASE_MEMORY + 2 * IN_FLIGHT_BYTES


#: Statuses a result can have.
OK, FAILED, SKIPPED, PLANNED, NOT_RUN = "ok", "failed", "skipped", "planned", "not run"


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

    @property
    def type(self) -> str | None:
        return self.options.get("type")


@dataclass
class Result:
    """What became of one job: status, sizes, time and the error, if any."""

    input: str
    output: str
    type: str | None
    status: str
    outputs: list[str] = field(default_factory=list)
    format: str | None = None
    source_bytes: int | None = None
    target_bytes: int | None = None
    seconds: float = 0.0
    error: str | None = None
    error_type: str | None = None
    exit_code: int = EXIT_OK
    warnings: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return self.status in (OK, SKIPPED, PLANNED)

    @property
    def ratio(self) -> float | None:
        if self.source_bytes and self.target_bytes:
            return self.source_bytes / self.target_bytes
        return None

    def as_dict(self) -> dict[str, Any]:
        return asdict(self) | {"ratio": self.ratio}


@dataclass
class BatchReport:
    """Every job's result, in the order the jobs were given."""

    results: list[Result]
    seconds: float = 0.0
    workers: int = 1
    runner: str = "local"

    def __iter__(self):
        return iter(self.results)

    def __len__(self) -> int:
        return len(self.results)

    def __getitem__(self, i: int) -> Result:
        return self.results[i]

    @property
    def ok(self) -> bool:
        return all(r.ok for r in self.results)

    @property
    def failures(self) -> list[Result]:
        return [r for r in self.results if r.status == FAILED]

    @property
    def exit_code(self) -> int:
        """0 when every job succeeded; else the failures' exit code when they share one
        (4 for broken files, ...), 1 when they differ or jobs were left unrun."""
        if self.ok:
            return EXIT_OK
        codes = {r.exit_code for r in self.failures}
        return codes.pop() if len(codes) == 1 else EXIT_FAILURE

    def as_dict(self) -> dict[str, Any]:
        counts: dict[str, int] = {}
        for r in self.results:
            counts[r.status] = counts.get(r.status, 0) + 1
        return {
            "ok": self.ok,
            "exit_code": self.exit_code,
            "runner": self.runner,
            "workers": self.workers,
            "seconds": self.seconds,
            "counts": counts,
            "source_bytes": sum(r.source_bytes or 0 for r in self.results if r.status == OK),
            "target_bytes": sum(r.target_bytes or 0 for r in self.results if r.status == OK),
            "results": [r.as_dict() for r in self.results],
        }


def bits_type(bits: int, per_channel: bool = False) -> str:
    """quantize-rs's `--bits N [--per-channel]` as a type name. The block codecs scale
    every 32 values of a channel separately, so per-channel is already implied."""
    try:
        return BITS_TYPES[int(bits)]
    except (KeyError, ValueError, TypeError):
        raise UsageError(f"bits must be 4 or 8, got {bits!r}") from None


def check_type(name: str) -> None:
    """Raise UsageError unless `name` is a codec or file type the planner accepts."""
    from bundler.bundle import Bundle, Metadata
    from bundler.plan import PlanOptions, make_plan

    make_plan(Bundle(Metadata({})), PlanOptions(type=name))


def check_template(template: str) -> None:
    """Raise UsageError for a template naming an unknown field or not a valid format."""
    try:
        names = [f for _, f, _, _ in string.Formatter().parse(template) if f is not None]
    except ValueError as exc:
        raise UsageError(f"output-name template {template!r}: {exc}") from None
    for name in names:
        if name not in TEMPLATE_FIELDS:
            raise UsageError(
                f"output-name template {template!r}: unknown field {{{name}}}; "
                f"fields: {', '.join('{' + f + '}' for f in TEMPLATE_FIELDS)}"
            )
    if not names or "{" not in template:
        raise UsageError(f"output-name template {template!r} names no field: every output gets it")


def output_name(template: str, src: str, type: str, fmt: str | None) -> str:
    """The output file name `template` gives the input `src` converted to `type` in `fmt`
    (None: a file whose format cannot be told keeps its extension; its job fails later)."""
    from bundler.containers import module

    src = os.path.normpath(src)
    name = os.path.basename(src)
    stem, dot, ext = name.rpartition(".")
    if os.path.isdir(src) or not dot:
        stem, ext = name, ""
    values = {
        "stem": stem,
        "name": name,
        "parent": os.path.basename(os.path.dirname(os.path.abspath(src))),
        "type": type.upper(),
        "format": fmt or ext,
        "ext": module(fmt).EXTENSIONS[0] if fmt else ext,
    }
    return template.format(**values)


def output_format(job_format: str | None, src: str) -> str | None:
    """The output format: the one asked for, else the input's own (None when the input is
    not a model file: its job reports that when it runs)."""
    from bundler.containers import detect

    if job_format:
        return job_format
    try:
        return detect(src)
    except BundlerError:
        return None


def make_jobs(
    inputs: list[str],
    output_dir: str,
    types: list[str],
    options: dict[str, Any],
    *,
    template: str = DEFAULT_TEMPLATE,
    format: str | None = None,
    where: str = "",
    **settings: Any,
) -> list[Job]:
    """One job per input and type, each written to `output_dir` under `template`'s name.
    `settings` are the other `Job` fields (split_max_size, aprender, threads, skip_existing)."""
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
    from bundler.plan import PlanOptions, make_plan

    if job.threads:
        from bundler.codecs import set_threads

        set_threads(job.threads)
    bundle = open_bundle(job.input)
    plan = make_plan(bundle, PlanOptions(**job.options))
    result.source_bytes, result.target_bytes = plan.source_bytes, plan.target_bytes
    if not dry_run and os.path.dirname(job.output):
        os.makedirs(os.path.dirname(job.output), exist_ok=True)
    report = write_bundle(
        bundle, plan, job.output, format=job.format, force=force or dry_run, dry_run=dry_run,
        split_max_size=job.split_max_size, source_name=job.input,
        write_options={"aprender": True} if job.aprender else None,
    )  # fmt: skip
    result.format = report.format
    result.outputs = report.outputs


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
