"""`validate`: every structural rule of a model file's format, its checksums, and scales
every decoder can use; with `strict`, also what llama.cpp, aprender or the reference
SafeTensors reader would refuse.

The format readers enforce the structure (offsets, sizes, order, the APR header CRC); a
file they refuse is reported with their message. A file that is not a model file at all,
is truncated, or uses a feature bundler cannot read is `unreadable` (exit code 4); any
other failed rule makes it `invalid` (exit code 5).
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from bundler.bundle import Bundle
from bundler.containers import detect, module, open_header
from bundler.errors import FormatError, TruncatedError, UnsupportedFormatError
from bundler.inspection import files
from bundler.problems import Problem
from bundler.scales import Finding, scale_fields, scan, where

__all__ = ["Problem", "Report", "scan_bytes", "unreadable", "validate"]


@dataclass
class Report:
    """The outcome of validating one file."""

    path: str
    format: str | None = None
    strict: bool = False
    #: False when the file could not be read as a model at all
    parsed: bool = True
    errors: list[Problem] = field(default_factory=list)
    warnings: list[Problem] = field(default_factory=list)
    files: list[str] = field(default_factory=list)
    tensors: int = 0
    scanned_tensors: int = 0
    scanned_bytes: int = 0

    @property
    def valid(self) -> bool:
        return self.parsed and not self.errors

    def as_dict(self) -> dict[str, Any]:
        return {
            "path": self.path,
            "format": self.format,
            "strict": self.strict,
            "valid": self.valid,
            "parsed": self.parsed,
            "errors": [p.as_dict() for p in self.errors],
            "warnings": [p.as_dict() for p in self.warnings],
            "files": self.files,
            "tensors": self.tensors,
            "scanned_tensors": self.scanned_tensors,
            "scanned_bytes": self.scanned_bytes,
        }


def unreadable(exc: FormatError) -> bool:
    """True when a reader's refusal means the file cannot be read as a model at all: it ends
    before what it describes, or uses a feature bundler does not implement."""
    return isinstance(exc, (TruncatedError, UnsupportedFormatError))


def _from_format_error(exc: FormatError) -> Problem:
    return Problem(exc.problem, "format", exc.path, exc.offset)


def scan_bytes(bundle: Bundle) -> int:
    """Bytes the scale scan of `bundle` reads."""
    return sum(t.nbytes for t in bundle.tensors.values() if scale_fields(t.codec.facts))


def validate(
    path: str | os.PathLike[str],
    strict: bool = False,
    progress: Callable[[Bundle], Callable[[int], None] | None] | None = None,
) -> Report:
    """Check the model file at `path`.

    A file that is not a model file raises `FormatError` (and a missing file
    `FileNotFound`); every other finding is in the report. `progress(bundle)` may return a
    callback that receives the bytes of each scanned chunk.
    """
    path = os.fspath(path)
    report = Report(path, strict=strict)
    report.format = detect(path)
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            bundle = open_header(path)
    except FormatError as exc:
        report.parsed = not unreadable(exc)
        report.errors.append(_from_format_error(exc))
        return report
    for w in caught:
        report.warnings.append(Problem(str(w.message), "format", path))
    report.tensors = len(bundle.tensors)
    report.files = files(bundle)
    fmt = module(report.format)
    report.errors += fmt.check(bundle, report.files)
    _scan_scales(bundle, report, progress(bundle) if progress else None)
    if strict:
        report.errors += fmt.check_strict(bundle, report.files)
    return report


def _scan_scales(bundle: Bundle, report: Report, progress: Callable[[int], None] | None) -> None:
    for t in bundle.tensors.values():
        if not scale_fields(t.codec.facts):
            continue
        for finding in scan(t, progress=progress):
            problem = _scale_problem(t, finding)
            (report.errors if finding.kind == "nan" else report.warnings).append(problem)
        report.scanned_tensors += 1
        report.scanned_bytes += t.nbytes


def _scale_problem(tensor, finding: Finding) -> Problem:
    first = where(tensor, finding.blocks[0])
    more = ""
    if finding.count > 1:
        listed = ", ".join(f"{b:,}" for b in finding.blocks[1:])
        rest = finding.count - len(finding.blocks)
        more = f" (also block{'s' if finding.count > 2 else ''} {listed}"
        more += f" and {rest:,} more)" if rest else ")"
    if finding.kind == "nan":
        what = "is NaN: the block's values are lost"
    else:
        what = "is infinite (the block overflowed half precision when it was written)"
    count = f"{finding.count:,} block{'s' if finding.count > 1 else ''}: "
    return Problem(
        f"tensor {tensor.name!r} ({tensor.codec.name}): {count}scale {finding.field} of "
        f"{first}{more} {what}",
        "nan-scale" if finding.kind == "nan" else "inf-scale",
        finding.path,
        finding.offset,
        tensor.name,
        finding.blocks,
    )
