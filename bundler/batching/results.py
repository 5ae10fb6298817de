"""What became of each conversion of a batch (`Result`), and of the whole batch
(`BatchReport`): plain data, sent back from worker processes and Ray tasks."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

from bundler.errors import EXIT_FAILURE, EXIT_OK

#: Statuses a result can have.
OK, FAILED, SKIPPED, PLANNED, NOT_RUN = "ok", "failed", "skipped", "planned", "not run"


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
    #: a size-targeted job's target, predicted and actual bytes, mix and predicted error
    allocation: dict[str, Any] | None = None

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
