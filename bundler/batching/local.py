"""Running a batch on this machine: one conversion at a time in this process, or several
in worker processes, as many as the memory budget allows.

Jobs are handed out one by one as workers free up, so after a failure (without
continue_on_error) nothing new starts; the conversions already running finish (their
outputs are complete files) and the rest are reported as not run.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

from bundler.batching.jobs import (
    Job,
    available_memory,
    conversion_memory,
    not_run,
    run_job,
    worker_threads,
)
from bundler.batching.results import FAILED, Result
from bundler.errors import EXIT_FAILURE, UsageError

if TYPE_CHECKING:
    import concurrent.futures as cf
    import multiprocessing.context

#: The module the workers' server process imports first (bundler/batching/warm.py).
WARM = "bundler.batching.warm"
#: Called with each result as it arrives.
OnResult = Callable[[Result], None]


def memory_budget(budget: int | None = None) -> int:
    """The bytes parallel conversions may use together: `budget`, else half of what the
    system has available (1 GiB when that cannot be read)."""
    if budget is not None:
        if budget <= 0:
            raise UsageError(f"memory budget must be positive, got {budget}")
        return budget
    available = available_memory()
    return available // 2 if available else 1 << 30


def parallel_jobs(wanted: int, count: int, budget: int | None = None) -> int:
    """How many conversions run at once: `wanted`, no more than there are jobs, and no more
    than fit in the memory budget at `conversion_memory()` each (always at least one)."""
    if wanted < 1:
        raise UsageError(f"--jobs must be at least 1, got {wanted}")
    fit = memory_budget(budget) // conversion_memory()
    return max(1, min(wanted, count, fit))


def run_local(
    jobs: list[Job],
    *,
    workers: int = 1,
    force: bool = False,
    continue_on_error: bool = False,
    on_result: OnResult | None = None,
) -> list[Result]:
    """Run `jobs` with `workers` conversions at once; results in the jobs' order."""
    results: list[Result | None] = [None] * len(jobs)

    def record(i: int, result: Result) -> bool:
        results[i] = result
        if on_result is not None:
            on_result(result)
        return result.status != FAILED or continue_on_error

    if workers <= 1:
        for i, job in enumerate(jobs):
            if not record(i, run_job(job, force)):
                break
    else:
        _run_pool(jobs, workers, force, record)
    return [r if r is not None else not_run(j) for r, j in zip(results, jobs, strict=True)]


def _run_pool(
    jobs: list[Job], workers: int, force: bool, record: Callable[[int, Result], bool]
) -> None:
    import concurrent.futures as cf

    context = _context()
    pending = iter(enumerate(jobs))
    threads = worker_threads(workers)
    with cf.ProcessPoolExecutor(workers, mp_context=context) as pool:
        running: dict[cf.Future, int] = {}

        def submit() -> None:
            for i, job in pending:
                job_threads = job if job.threads else _with_threads(job, threads)
                running[pool.submit(run_job, job_threads, force)] = i
                return

        for _ in range(workers):
            submit()
        stopping = False
        try:
            while running:
                done, _ = cf.wait(running, return_when=cf.FIRST_COMPLETED)
                for future in done:
                    i = running.pop(future)
                    result = _outcome(future, jobs[i])
                    # a dead worker breaks the pool: nothing more can start in it
                    if not record(i, result) or result.error_type == "WorkerDied":
                        stopping = True
                    if not stopping:
                        submit()
        except BaseException:
            for future in running:
                future.cancel()
            raise


def _context() -> multiprocessing.context.BaseContext:
    """Workers forked from a server process that loaded the compiled kernels once (never
    from this process, whose compiler threads may run); spawned where there is no fork."""
    import multiprocessing

    if "forkserver" not in multiprocessing.get_all_start_methods():
        return multiprocessing.get_context("spawn")
    context = multiprocessing.get_context("forkserver")
    context.set_forkserver_preload(["bundler.batching.jobs", "bundler.pipeline", WARM])
    return context


def _outcome(future: cf.Future, job: Job) -> Result:
    """The job's result, or a failed one when its worker process died (killed, out of
    memory); the atomic writers leave no partial file either way."""
    from concurrent.futures.process import BrokenProcessPool

    try:
        return future.result()
    except BrokenProcessPool as exc:
        result = not_run(job)
        result.status, result.error_type, result.exit_code = FAILED, "WorkerDied", EXIT_FAILURE
        result.error = f"the worker process converting it died ({exc})"
        return result


def _with_threads(job: Job, threads: int) -> Job:
    from dataclasses import replace

    return replace(job, threads=threads)
