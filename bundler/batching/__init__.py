"""Batch runs: many conversions from a list of inputs or a config file, on this machine
(one or several at a time) or on a Ray cluster, each model's result reported on its own.

    report = bundler.batch(["a.gguf", "b.safetensors"], "out/", types=["Q4_K_M", "Q8_0"])
    report = bundler.run_config("models.yaml")
    for r in report: print(r.input, r.status, r.target_bytes, r.error)
"""

from __future__ import annotations

import os
import time
from collections.abc import Sequence
from dataclasses import replace
from typing import Any

from bundler.batching.jobs import Job, expand_inputs, make_jobs, preflight, run_job
from bundler.batching.local import OnResult, parallel_jobs, run_local
from bundler.batching.naming import DEFAULT_TEMPLATE, bits_type
from bundler.batching.results import BatchReport, Result
from bundler.batching.schema import Config, read_config
from bundler.batching.source import ConfigError
from bundler.errors import UsageError

__all__ = [
    "BatchReport",
    "Config",
    "ConfigError",
    "Job",
    "Result",
    "batch",
    "execute",
    "read_config",
    "run_config",
]


def execute(
    jobs: list[Job],
    *,
    force: bool = False,
    dry_run: bool = False,
    continue_on_error: bool = False,
    jobs_at_once: int = 1,
    memory_budget: int | None = None,
    ray: str | bool | None = None,
    on_result: OnResult | None = None,
) -> BatchReport:
    """Check `jobs` (inputs exist, outputs distinct and not overwritten without `force`),
    then run them: here, `jobs_at_once` at a time within `memory_budget` bytes, or on Ray
    (`ray` True or "local": a cluster on this machine; else its address)."""
    preflight(jobs, force or dry_run)
    start = time.perf_counter()
    if dry_run:
        results = []
        for job in jobs:
            results.append(run_job(job, force, dry_run=True))
            if on_result is not None:
                on_result(results[-1])
        return BatchReport(results, time.perf_counter() - start, 1, "dry run")
    if ray:
        from bundler.batching.ray_runner import run_ray

        address = None if ray is True else str(ray)
        results = run_ray(
            jobs, address, force=force, continue_on_error=continue_on_error, on_result=on_result
        )
        return BatchReport(results, time.perf_counter() - start, len(jobs), "ray")
    workers = parallel_jobs(jobs_at_once, len(jobs), memory_budget)
    results = run_local(
        jobs, workers=workers, force=force, continue_on_error=continue_on_error,
        on_result=on_result,
    )  # fmt: skip
    return BatchReport(results, time.perf_counter() - start, workers, "local")


def resolve_types(
    type: str | None = None,
    types: Sequence[str] | None = None,
    bits: int | None = None,
    per_channel: bool = False,
) -> list[str]:
    """The output types asked for: `types`, or `type`, or quantize-rs's `bits` (default 8)."""
    given = [name for name, v in (("type", type), ("types", types), ("bits", bits)) if v]
    if len(given) > 1:
        raise UsageError(f"give one of {', '.join(given)}, not several")
    if types:
        return list(dict.fromkeys(types))
    if type:
        return [type]
    return [bits_type(bits or 8, per_channel)]


def resolve_targets(
    sizes: str | int | Sequence[str | int] | None, bpws: float | Sequence[float] | None
) -> list[tuple[int | None, float | None]]:
    """The size targets asked for, as (bytes, None) and (None, bits per weight)."""
    from bundler.batching.targets import parse_bpw
    from bundler.sizes import parse_size

    def many(v: Any) -> list:
        return [] if v is None else list(v) if isinstance(v, list | tuple) else [v]

    found = [(parse_size(s), None) for s in many(sizes)]
    found += [(None, parse_bpw(b)) for b in many(bpws)]
    return list(dict.fromkeys(found))


def batch(
    inputs: Sequence[str | os.PathLike[str]],
    output_dir: str | os.PathLike[str],
    type: str | None = None,
    *,
    types: Sequence[str] | None = None,
    bits: int | None = None,
    per_channel: bool = False,
    template: str = DEFAULT_TEMPLATE,
    format: str | None = None,
    split_max_size: int | None = None,
    aprender: bool = False,
    threads: int | None = None,
    force: bool = False,
    dry_run: bool = False,
    skip_existing: bool = False,
    continue_on_error: bool = False,
    jobs: int = 1,
    memory_budget: int | None = None,
    ray: str | bool | None = None,
    on_result: OnResult | None = None,
    target_size: str | int | Sequence[str | int] | None = None,
    target_bpw: float | Sequence[float] | None = None,
    candidates: str | Sequence[str] | None = None,
    **plan_options: Any,
) -> BatchReport:
    """Quantize every input (globs expanded) to each type into `output_dir`, named by
    `template`; returns every model's result. A bad model is a failed result, not an
    exception; without `continue_on_error` the models after it are not run.

    Instead of types, `target_size` (bytes or text such as "80M"; one or several) or
    `target_bpw` (one or several) make one output per target, each planned as
    `bundler.quantize(..., target_size=...)` plans it (`candidates`: the codecs it may
    choose); each result's `allocation` holds the mix and the predicted and actual sizes.
    `plan_options` are the fields of PlanOptions (tensor_types, pure, allow_requantize, ...).
    """
    names = expand_inputs([os.fspath(p) for p in inputs])
    targets = resolve_targets(target_size, target_bpw)
    if targets and (type or types or bits or per_channel):
        raise UsageError("give a size target or types (type, types, bits), not both")
    if candidates is not None and not targets:
        raise UsageError("candidates apply only with target_size or target_bpw")
    if not isinstance(candidates, str | None):
        candidates = ",".join(candidates)
    job_list = make_jobs(
        names, os.fspath(output_dir),
        [] if targets else resolve_types(type, types, bits, per_channel),
        plan_options, template=template, format=format, split_max_size=split_max_size,
        aprender=aprender, threads=threads, skip_existing=skip_existing, targets=targets,
        candidates=candidates,
    )  # fmt: skip
    return execute(
        job_list, force=force, dry_run=dry_run, continue_on_error=continue_on_error,
        jobs_at_once=jobs, memory_budget=memory_budget, ray=ray, on_result=on_result,
    )  # fmt: skip


def run_config(
    path: str | os.PathLike[str],
    *,
    dry_run: bool = False,
    force: bool | None = None,
    continue_on_error: bool | None = None,
    skip_existing: bool | None = None,
    jobs: int | None = None,
    memory_budget: int | None = None,
    ray: str | bool | None = None,
    on_result: OnResult | None = None,
) -> BatchReport:
    """Run the YAML or TOML config at `path`; arguments given here override the file's."""
    config = read_config(path)
    job_list = config.jobs
    if skip_existing is not None:
        job_list = [replace(j, skip_existing=skip_existing) for j in job_list]
    return execute(
        job_list,
        force=config.force if force is None else force,
        dry_run=dry_run,
        continue_on_error=config.continue_on_error
        if continue_on_error is None
        else continue_on_error,
        jobs_at_once=jobs or config.jobs_at_once,
        memory_budget=memory_budget or config.memory_budget,
        ray=ray,
        on_result=on_result,
    )
