"""Running a batch on a Ray cluster: one task per conversion, results gathered here.

Each task declares the CPUs and memory one conversion needs, so Ray places it on a worker
that has them. A task whose worker dies (killed, out of memory, node lost) is retried by
Ray; its writer only ever wrote a temporary file beside the output, which the retry (or,
after the last attempt, the driver) removes, so no partial file is left under the real
name. A bad model is not retried: its typed error comes back as a failed result.
Outputs are written where the job says: on a cluster of several machines, a path every
node shares.
"""

from __future__ import annotations

import contextlib
import os
from dataclasses import replace
from typing import Any

from bundler.batching.jobs import Job, conversion_memory, not_run, run_job
from bundler.batching.local import OnResult
from bundler.batching.results import FAILED, Result
from bundler.errors import EXIT_FAILURE, UsageError
from bundler.extras import require

#: Attempts after the first for a task whose worker died.
RETRIES = 3
#: What to install for --ray.
EXTRA = 'pip install "bundler[ray]"'


def import_ray() -> Any:
    """The ray module, or a UsageError naming the extra that installs it."""
    return require("ray", f"--ray needs Ray, which is not installed: {EXTRA}")


def run_ray(
    jobs: list[Job],
    address: str | None = None,
    *,
    force: bool = False,
    continue_on_error: bool = False,
    on_result: OnResult | None = None,
    threads: int = 1,
) -> list[Result]:
    """Run `jobs` as Ray tasks on the cluster at `address` (None or "local": start one on
    this machine; a process already connected uses its cluster); results in the jobs' order."""
    ray = import_ray()
    started = _connect(ray, address)
    try:
        return _gather(ray, jobs, force, continue_on_error, on_result, threads)
    finally:
        if started:
            ray.shutdown()


def _connect(ray: Any, address: str | None) -> bool:
    if ray.is_initialized():
        return False
    kwargs: dict[str, Any] = {"include_dashboard": False, "log_to_driver": False}
    if address and address != "local":
        kwargs["address"] = address
    try:
        ray.init(**kwargs)
    except (ConnectionError, ValueError, RuntimeError) as exc:
        raise UsageError(f"--ray {address or ''}: cannot connect to a Ray cluster: {exc}") from None
    return True


def _gather(
    ray: Any,
    jobs: list[Job],
    force: bool,
    continue_on_error: bool,
    on_result: OnResult | None,
    threads: int,
) -> list[Result]:
    task = ray.remote(run_job)
    refs: dict[Any, int] = {}
    for i, job in enumerate(jobs):
        # workers do not share the driver's working directory
        job = replace(
            job,
            input=os.path.abspath(job.input),
            output=os.path.abspath(job.output),
            threads=job.threads or threads,
        )
        options = task.options(
            num_cpus=job.threads, memory=conversion_memory(), max_retries=RETRIES,
            retry_exceptions=False, name=f"bundler:{os.path.basename(job.output)}",
        )  # fmt: skip
        refs[options.remote(job, force)] = i
    results: list[Result | None] = [None] * len(jobs)
    pending = list(refs)
    stopping = False
    while pending:
        done, pending = ray.wait(pending, num_returns=1)
        for ref in done:
            i = refs[ref]
            result = _outcome(ray, ref, jobs[i])
            if result is None:  # cancelled after a failure
                continue
            results[i] = result
            if on_result is not None:
                on_result(result)
            if result.status == FAILED and not continue_on_error and not stopping:
                stopping = True
                for other in pending:
                    ray.cancel(other)
    return [r if r is not None else not_run(j) for r, j in zip(results, jobs, strict=True)]


def _outcome(ray: Any, ref: Any, job: Job) -> Result | None:
    try:
        result = ray.get(ref)
    except ray.exceptions.TaskCancelledError:
        _remove_partials(job)
        return None
    except ray.exceptions.RayError as exc:
        _remove_partials(job)
        result = not_run(job)
        result.status, result.exit_code = FAILED, EXIT_FAILURE
        result.error_type = type(exc).__name__
        result.error = f"{str(exc).strip().splitlines()[0]} (after {RETRIES} retries)"
        return result
    # the driver's spelling of the paths, as the jobs were given
    result.input, result.output = job.input, job.output
    return result


def _remove_partials(job: Job) -> None:
    from bundler.atomic import remove_stale_partials

    directory, name = os.path.split(os.path.abspath(job.output))
    with contextlib.suppress(OSError):
        remove_stale_partials(directory, name)
