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
from dataclasses import asdict, dataclass, field
from typing import Any

from bundler.bundle import Bundle
from bundler.containers import detect
from bundler.errors import FormatError, TruncatedError, UnsupportedFormatError
from bundler.inspection import open_header
from bundler.scales import Finding, scale_fields, scan, where


@dataclass
class Problem:
    """One broken rule: what, where (file, byte offset, tensor, blocks) and whose rule."""

    message: str
    rule: str
    path: str | None = None
    offset: int | None = None
    tensor: str | None = None
    blocks: list[int] | None = None

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)

    def place(self) -> str:
        """`path at byte N`, or as much of it as is known."""
        at = f"byte {self.offset:,}" if self.offset is not None else ""
        return " at ".join(x for x in (self.path or "", at) if x)


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
    report.files = _files(bundle)
    if report.format == "apr":
        _check_apr_footer(path, report)
    _scan_scales(bundle, report, progress(bundle) if progress else None)
    if strict:
        _STRICT[report.format](bundle, report)
        _strict_affine(bundle, report)
    return report


def _files(bundle: Bundle) -> list[str]:
    from bundler.inspection import container_facts

    return container_facts(bundle)["files"]


def _check_apr_footer(path: str, report: Report) -> None:
    from bundler.containers.apr import file_crc
    from bundler.containers.apr.schema import FOOTER_SIZE

    with open(path, "rb") as f:
        end = os.fstat(f.fileno()).st_size - FOOTER_SIZE
        f.seek(end)
        stored = int.from_bytes(f.read(FOOTER_SIZE), "little")
        crc = file_crc(f, end)
    if crc != stored:
        report.errors.append(
            Problem(
                f"footer CRC mismatch: stored {stored:#010x}, computed {crc:#010x} over bytes "
                f"0..{end:,} (the file is corrupt)",
                "checksum",
                path,
                end,
            )
        )


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


# ------------------------------------------------------------------------ strict rules


def _strict_gguf(bundle: Bundle, report: Report) -> None:
    from bundler.containers.gguf.rules import check_llama_rules

    for p in report.files:
        for message in check_llama_rules(p):
            report.errors.append(Problem(f"llama.cpp would refuse it: {message}", "llama.cpp", p))


def _strict_apr(bundle: Bundle, report: Report) -> None:
    from bundler.codecs import get
    from bundler.containers.apr import non_native
    from bundler.containers.apr.schema import APRENDER_MAX_METADATA, HEADER_COMPILED, HEADER_SIZE

    for codec, names in non_native(list(bundle.tensors.values())).items():
        shown = ", ".join(repr(n) for n in names[:5])
        more = f" and {len(names) - 5} more" if len(names) > 5 else ""
        report.errors.append(
            Problem(
                f"aprender cannot read dtype code {get(codec).facts.apr_code} ({codec}, this "
                f"project's extension) of {len(names)} tensor(s): {shown}{more}",
                "aprender",
                report.path,
                tensor=names[0],
            )
        )
    with open(report.path, "rb") as f:
        head = HEADER_COMPILED.parse(f.read(HEADER_SIZE))
    if head.metadata_size > APRENDER_MAX_METADATA:
        report.errors.append(
            Problem(
                f"the metadata section is {head.metadata_size:,} bytes; aprender reads at most "
                f"{APRENDER_MAX_METADATA:,}",
                "aprender",
                report.path,
                head.metadata_offset,
            )
        )


def _strict_safetensors(bundle: Bundle, report: Report) -> None:
    import safetensors

    for p in report.files:
        if p.endswith(".json"):
            continue  # the index of a sharded checkpoint: no SafeTensors header
        try:
            with safetensors.safe_open(p, framework="np") as f:
                f.keys()
        except Exception as exc:  # the reference reader's own error types
            report.errors.append(
                Problem(f"the reference SafeTensors reader refuses it: {exc}", "safetensors", p)
            )


def _strict_affine(bundle: Bundle, report: Report) -> None:
    """Affine-quantized weights (formats/affine.md) run in compressed-tensors readers (vLLM,
    Transformers) from SafeTensors; llama.cpp and aprender have no such tensors."""
    from bundler.codecs.affine import checkpoint

    runtime = {"gguf": "llama.cpp", "apr": "aprender"}.get(report.format or "")
    if runtime is None or checkpoint.read_config(bundle) is None:
        return
    scales = [n for n in bundle.tensors if n.endswith(".weight_scale")]
    if scales:
        report.errors.append(
            Problem(
                f"{runtime} cannot run affine-quantized weights (compressed-tensors layout, "
                f"{len(scales)} weights such as {scales[0][: -len('_scale')]!r}); decode them "
                "(--type f16) or convert to SafeTensors",
                runtime,
                report.path,
                tensor=scales[0],
            )
        )


_STRICT = {"gguf": _strict_gguf, "apr": _strict_apr, "safetensors": _strict_safetensors}
