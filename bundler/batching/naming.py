"""How a batch names its outputs and types: quantize-rs's `--bits`, the output-name
template and the output format."""

from __future__ import annotations

import os
import string

from bundler.errors import BundlerError, UsageError

#: The widths quantize-rs's `--bits` takes; each names the affine codec of that width.
BITS = (4, 8)
#: quantize-rs's default width when nothing names a type.
DEFAULT_BITS = 8
#: The default output-name template.
DEFAULT_TEMPLATE = "{stem}-{type}.{ext}"
#: Fields an output-name template may use.
TEMPLATE_FIELDS = {
    "stem": "the input's file name without its extension (a directory's name)",
    "name": "the input's file name",
    "parent": "the name of the input's directory",
    "type": "the output type as written, upper case, ':' as '-' (Q4_K_M, INT8-CHANNEL)",
    "format": "the output format (gguf, safetensors, apr)",
    "ext": "the output format's file extension",
}


def bits_type(bits: int, per_channel: bool = False) -> str:
    """quantize-rs's `--bits N [--per-channel]` as a type name: the affine codec of that
    width, one scale per tensor or per output channel (as `quantize --bits` means it)."""
    if isinstance(bits, bool) or bits not in BITS:
        raise UsageError(f"bits must be 4 or 8, got {bits!r}")
    return f"int{bits}" + (":channel" if per_channel else "")


def check_type(name: str) -> None:
    """Raise UsageError unless `name` is a codec or file type the planner accepts."""
    from bundler.bundle import Bundle, Metadata
    from bundler.plan import PlanOptions
    from bundler.plan.affine import plan_bundle

    plan_bundle(Bundle(Metadata({})), PlanOptions(type=name))


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
        "type": type.upper().replace(":", "-"),
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
