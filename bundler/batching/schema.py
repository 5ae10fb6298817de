"""The config file's schema, and how a valid file becomes jobs.

Two shapes are accepted, and may be mixed: quantize-rs's (`bits`, `per_channel`, `models`
with `input`/`output`, a `batch` section with `input_dir`/`output_dir`) and a richer one
where every quantize option may be set at the top (the defaults), in a `models` entry (an
override for that entry) or in the `batch` section; an `input` may be a glob, and `types`
lists several output types per model, `target_size` / `target_bpw` size targets instead of
types (one output per target, planned as `quantize --target-size` plans it), and `text`
(with `text_ctx`, `text_chunks`) to measure the importance matrix as `quantize --text` does.
Paths are relative to the config file's directory.

Every problem is collected with its file, line and key before any conversion starts: an
unknown key, a wrong type, a bad value, an input that does not exist.
"""

from __future__ import annotations

import collections.abc
import difflib
import glob
import os
import re
import typing
from dataclasses import dataclass, fields
from typing import Any

from bundler.batching.jobs import Job
from bundler.batching.naming import (
    DEFAULT_BITS,
    DEFAULT_TEMPLATE,
    bits_type,
    check_template,
    check_type,
    output_format,
    output_name,
)
from bundler.batching.source import ConfigError, Lines, Path, load
from bundler.errors import BundlerError

#: Extensions of the files an `input_dir` directory contributes.
MODEL_EXTENSIONS = (".gguf", ".safetensors", ".apr")


def _plan_keys() -> dict[str, str]:
    """The quantize options (PlanOptions' fields) and the kind of value each takes."""
    from bundler.plan import PlanOptions

    hints = typing.get_type_hints(PlanOptions)
    kinds = {}
    for f in fields(PlanOptions):
        hint = hints[f.name]
        if f.name == "type":
            kinds[f.name] = "type"
        elif f.name == "imatrix":
            kinds[f.name] = "path"
        elif f.name in ("include_weights", "exclude_weights", "override_kv"):
            kinds[f.name] = "strings"
        elif f.name == "prune_layers":
            kinds[f.name] = "layers"
        elif hint is bool:
            kinds[f.name] = "bool"
        elif hint in (str, str | None):
            kinds[f.name] = "codec" if f.name.endswith("_type") else "str"
        elif hint in (int, int | None):
            kinds[f.name] = "count"
        elif typing.get_origin(hint) is collections.abc.Sequence:
            kinds[f.name] = "pairs"
        else:
            raise TypeError(f"no config value kind for PlanOptions.{f.name} ({hint})")
    return kinds


#: Options besides the plan's: output, writing, quantize-rs's names, several types.
OTHER_OPTION_KEYS = {
    "types": "types",
    "bits": "bits",
    "per_channel": "bool",
    "to": "format",
    "split_max_size": "size",
    "aprender": "bool",
    "threads": "count",
    "output_dir": "path",
    "template": "template",
    "skip_existing": "bool",
    "target_size": "target_size",
    "target_bpw": "target_bpw",
    "candidates": "candidates",
    "text": "path",
    "text_ctx": "count",
    "text_chunks": "count",
}
PLAN_KEYS = _plan_keys()
#: Keys allowed at the top, in each `models` entry and in the `batch` section.
OPTION_KEYS = PLAN_KEYS | OTHER_OPTION_KEYS
#: How the whole run goes: the top level only (`continue_on_error` also in `batch`).
RUN_KEYS = {
    "continue_on_error": "bool",
    "force": "bool",
    "jobs": "count",
    "memory_budget": "size",
}
TOP_KEYS = OPTION_KEYS | RUN_KEYS | {"models": "models", "batch": "batch"}
MODEL_KEYS = OPTION_KEYS | {"input": "path", "output": "path"}
BATCH_KEYS = OPTION_KEYS | {"input_dir": "path", "continue_on_error": "bool"}
#: Keys that choose the output type(s) or size target(s); set at one level, they replace
#: the outer level's.
TYPE_KEYS = ("type", "types", "bits", "target_size", "target_bpw")
#: Options a size target chooses for itself, or that contradict it.
NOT_WITH_TARGET = ("per_channel", "pure", "prune_layers")


@dataclass
class Config:
    """A validated config: its jobs and how to run them."""

    path: str
    jobs: list[Job]
    continue_on_error: bool = False
    force: bool = False
    jobs_at_once: int = 1
    memory_budget: int | None = None


def read_config(path: str | os.PathLike[str]) -> Config:
    """Load and validate `path` (YAML or TOML); raises ConfigError listing every problem."""
    data, lines = load(path)
    check = _Checker(lines)
    if not isinstance(data, dict):
        raise ConfigError([(lines.place(()), "must be a mapping of keys")])
    check.keys(data, (), TOP_KEYS)
    models = data.get("models", [])
    batch = data.get("batch")
    if isinstance(models, list):
        for i, entry in enumerate(models):
            check.keys(entry, ("models", i), MODEL_KEYS, required=("input",))
    if isinstance(batch, dict):
        check.keys(batch, ("batch",), BATCH_KEYS, required=("input_dir",))
    if not models and batch is None and not check.problems:
        check.problem((), "no `models` and no `batch` section: nothing to convert")
    if check.problems:
        raise ConfigError(check.problems)

    defaults = {k: v for k, v in data.items() if k in OPTION_KEYS}
    base = os.path.dirname(os.path.abspath(os.fspath(path)))
    jobs: list[Job] = []
    for i, entry in enumerate(models):
        jobs += check.jobs(entry, defaults, ("models", i), base)
    if batch is not None:
        jobs += check.jobs(batch, defaults, ("batch",), base)
    if check.problems:
        raise ConfigError(check.problems, not_found=check.all_missing)
    continue_on_error = data.get("continue_on_error", False)
    if isinstance(batch, dict):
        continue_on_error = batch.get("continue_on_error", continue_on_error)
    return Config(
        os.fspath(path), jobs, continue_on_error, data.get("force", False),
        data.get("jobs", 1), _size(data.get("memory_budget")),
    )  # fmt: skip


class _Checker:
    """Collects problems, each with its place."""

    def __init__(self, lines: Lines):
        self.lines = lines
        self.problems: list[tuple[str, str]] = []
        self.missing = 0

    @property
    def all_missing(self) -> bool:
        return self.missing == len(self.problems)

    def problem(self, key: Path, text: str) -> None:
        self.problems.append((self.lines.place(key), text))

    def keys(self, data: Any, key: Path, allowed: dict[str, str], required=()) -> None:
        if not isinstance(data, dict):
            self.problem(key, f"must be a mapping of keys, not {_kind_of(data)}")
            return
        for name, value in data.items():
            if name not in allowed:
                close = difflib.get_close_matches(str(name), allowed, n=1)
                hint = f" (did you mean {close[0]!r}?)" if close else ""
                self.problem((*key, name), f"unknown key{hint}")
            else:
                self.value((*key, name), allowed[name], value)
        for name in required:
            if name not in data:
                self.problem(key, f"`{name}` is required")
        given = [k for k in TYPE_KEYS if k in data]
        if len(given) > 1:
            self.problem((*key, given[1]), f"give one of {', '.join(given)}, not several")

    def value(self, key: Path, kind: str, value: Any) -> None:
        problem = _CHECKS[kind](value)
        if problem:
            self.problem(key, problem)

    def jobs(self, entry: dict, defaults: dict, key: Path, base: str) -> list[Job]:
        merged = {k: v for k, v in defaults.items() if k not in TYPE_KEYS or not _has_type(entry)}
        merged |= {k: v for k, v in entry.items() if k in OPTION_KEYS}
        for name in ("imatrix", "text"):
            if name in merged:
                merged[name] = _path(base, merged[name])
        if "imatrix" in merged and "text" in merged:
            self.problem((*key, "text"), "give imatrix or text (which measures one), not both")
            return []
        unused = [k for k in ("text_ctx", "text_chunks") if k in merged and "text" not in merged]
        if unused:
            self.problem((*key, unused[0]), "applies only with text")
            return []
        types = self.outputs(merged, key)
        if types is None:
            return []
        inputs = self.inputs(entry, key, base)
        if "output" in entry:
            if len(inputs) != 1 or len(types) != 1:
                self.problem(
                    (*key, "output"),
                    f"names one file, but this entry makes {len(inputs) * len(types)} "
                    "outputs; give `output_dir` (and a `template`) instead",
                )
                return []
            return [self.job(inputs[0], _path(base, entry["output"]), types[0], merged, key)]
        if "output_dir" not in merged:
            self.problem(key, "needs `output` or `output_dir` (here or at the top)")
            return []
        out_dir = _path(base, merged["output_dir"])
        template = merged.get("template", DEFAULT_TEMPLATE)
        jobs = []
        for src in inputs:
            fmt = output_format(merged.get("to"), src)
            for t in types:
                dst = os.path.join(out_dir, output_name(template, src, _name(t), fmt))
                jobs.append(self.job(src, dst, t, merged, key))
        return jobs

    def outputs(self, merged: dict, key: Path) -> list[str | tuple] | None:
        """The types, or the (bytes, bits per weight) size targets, of an entry's outputs;
        None (a problem noted) when the entry's options contradict its targets."""
        targets = _targets(merged)
        if not targets:
            if "candidates" in merged:
                self.problem((*key, "candidates"), "applies only with target_size or target_bpw")
                return None
            return _types(merged)
        given = "target_size" if "target_size" in merged else "target_bpw"
        clash = [k for k in NOT_WITH_TARGET if merged.get(k)]
        if clash:
            self.problem(
                (*key, given), f"a size target chooses every tensor's codec: it excludes "
                f"{', '.join(clash)} (set here or above)",
            )  # fmt: skip
            return None
        return targets

    def inputs(self, entry: dict, key: Path, base: str) -> list[str]:
        name = "input" if "input" in entry else "input_dir"
        pattern = _path(base, entry[name])
        if glob.has_magic(pattern):
            found = sorted(glob.glob(pattern))
            if not found:
                self.missing += 1
                self.problem((*key, name), f"{entry[name]!r} matches no file")
            return found
        if name == "input_dir" and os.path.isdir(pattern):
            names = sorted(os.listdir(pattern))
            found = [os.path.join(pattern, n) for n in names if n.endswith(MODEL_EXTENSIONS)]
            if not found:
                self.problem((*key, name), f"{entry[name]!r} holds no model file")
            return found
        if not os.path.exists(pattern):
            self.missing += 1
            self.problem((*key, name), f"{entry[name]}: no such file")
            return []
        return [pattern]

    def job(self, src: str, dst: str, type: str | tuple, merged: dict, key: Path) -> Job:
        options = {k: merged[k] for k in PLAN_KEYS if k in merged}
        size, bpw = type if isinstance(type, tuple) else (None, None)
        options["type"] = None if isinstance(type, tuple) else type
        if "tensor_types" in options:
            options["tensor_types"] = _pairs(options["tensor_types"])
        line = self.lines.line(key)
        candidates = merged.get("candidates") if isinstance(type, tuple) else None
        if isinstance(candidates, list):
            candidates = ",".join(candidates)
        return Job(
            src, dst, options, format=merged.get("to"),
            split_max_size=_size(merged.get("split_max_size")),
            aprender=merged.get("aprender", False), threads=merged.get("threads"),
            skip_existing=merged.get("skip_existing", False),
            where=f"{self.lines.path}:{line}" if line else self.lines.path,
            target_size=size, target_bpw=bpw, candidates=candidates, text=merged.get("text"),
            text_context=merged.get("text_ctx"), text_chunks=merged.get("text_chunks"),
        )  # fmt: skip


def _has_type(entry: dict) -> bool:
    return any(k in entry for k in TYPE_KEYS)


def _types(merged: dict) -> list[str]:
    if "types" in merged:
        return list(merged["types"])
    if "type" in merged:
        return [merged["type"]]
    return [bits_type(merged.get("bits", DEFAULT_BITS), merged.get("per_channel", False))]


def _targets(merged: dict) -> list[tuple[int | None, float | None]]:
    """The entry's size targets as (bytes, None) and (None, bits per weight)."""
    from bundler.batching.targets import parse_bpw

    sizes = merged.get("target_size", [])
    bpws = merged.get("target_bpw", [])
    found = [(_size(v), None) for v in (sizes if isinstance(sizes, list) else [sizes])]
    found += [(None, parse_bpw(v)) for v in (bpws if isinstance(bpws, list) else [bpws])]
    return list(dict.fromkeys(found))


def _name(type: str | tuple) -> str:
    """What a type or size target is called in output names."""
    from bundler.batching.targets import target_label

    return target_label(*type) if isinstance(type, tuple) else type


def _path(base: str, path: str) -> str:
    return os.path.join(base, os.path.expanduser(path))


def _size(value: Any) -> int | None:
    from bundler.sizes import parse_size

    return None if value is None else parse_size(value)


def _pairs(value: Any) -> list[tuple[str, str]]:
    """tensor_types as (regex, codec) pairs, from a mapping, "REGEX=CODEC" strings or pairs."""
    if isinstance(value, dict):
        return [(str(k), str(v)) for k, v in value.items()]
    return [tuple(v.rsplit("=", 1)) if isinstance(v, str) else tuple(v) for v in value]


def _kind_of(value: Any) -> str:
    names = {bool: "a boolean", int: "an integer", float: "a number", str: "a string"}
    names |= {list: "a list", dict: "a mapping", type(None): "empty"}
    return names.get(type(value), type(value).__name__)


def _want(value: Any, cls: type, what: str) -> str | None:
    ok = isinstance(value, cls) and not (cls is int and isinstance(value, bool))
    return None if ok else f"must be {what}, not {_kind_of(value)} ({value!r})"


def _check_str(value: Any) -> str | None:
    problem = _want(value, str, "a string")
    return problem or (None if value else "must not be empty")


def _check_type(value: Any) -> str | None:
    return _check_str(value) or _usage(check_type, value)


def _check_codec(value: Any) -> str | None:
    from bundler.codecs import get

    return _check_str(value) or _usage(get, value)


def _check_types(value: Any) -> str | None:
    if not isinstance(value, list) or not value:
        return f"must be a non-empty list of types, not {_kind_of(value)}"
    for item in value:
        problem = _check_type(item)
        if problem:
            return f"{item!r}: {problem}"
    if len(set(value)) != len(value):
        return "lists a type twice"
    return None


def _check_count(value: Any) -> str | None:
    problem = _want(value, int, "an integer")
    return problem or (None if value >= 1 else f"must be at least 1, not {value}")


def _check_bits(value: Any) -> str | None:
    problem = _want(value, int, "4 or 8")
    return problem or _usage(bits_type, value)


def _check_format(value: Any) -> str | None:
    from bundler.containers import formats

    problem = _check_str(value)
    return problem or (None if value in formats() else f"must be one of {', '.join(formats())}")


def _check_size(value: Any) -> str | None:
    from bundler.sizes import parse_size

    if isinstance(value, bool) or not isinstance(value, (int, str)):
        return f"must be a size (bytes, or like 500M, 2G), not {_kind_of(value)}"
    return _usage(parse_size, value)


def _one_or_list(check: Any, value: Any, what: str) -> str | None:
    """`check` on a value or on each of a non-empty list of them, none repeated."""
    if not isinstance(value, list):
        return check(value)
    if not value:
        return f"must be {what} or a non-empty list of them"
    for item in value:
        problem = check(item)
        if problem:
            return f"{item!r}: {problem}"
    if len(set(map(str, value))) != len(value):
        return "lists a target twice"
    return None


def _check_target_size(value: Any) -> str | None:
    return _one_or_list(_check_size, value, "a size (bytes, or like 80M, 75MiB)")


def _check_bpw(value: Any) -> str | None:
    from bundler.batching.targets import parse_bpw

    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return f"must be a number of bits per weight (like 4.5), not {_kind_of(value)}"
    return _usage(parse_bpw, value)


def _check_target_bpw(value: Any) -> str | None:
    return _one_or_list(_check_bpw, value, "a number of bits per weight")


def _check_candidates(value: Any) -> str | None:
    from bundler.plan.curves import candidate_codecs

    ok = isinstance(value, str) or (
        isinstance(value, list) and value and all(isinstance(v, str) for v in value)
    )
    if not ok:
        return f"must be codecs, comma-separated or a list, not {_kind_of(value)}"
    return _usage(candidate_codecs, value)


def _check_pairs(value: Any) -> str | None:
    if not isinstance(value, (dict, list)):
        return f"must be a mapping of REGEX: CODEC or a list of REGEX=CODEC, not {_kind_of(value)}"
    items = value.items() if isinstance(value, dict) else value
    for item in items:
        if isinstance(item, str):
            item = item.rsplit("=", 1)
        if not isinstance(item, (list, tuple)) or len(item) != 2 or not all(item):
            return f"{item!r} is not REGEX=CODEC"
        regex, codec = item
        try:
            re.compile(str(regex))
        except re.error as exc:
            return f"{regex!r} is not a regular expression: {exc}"
        problem = _check_codec(codec)
        if problem:
            return f"{regex!r}: {problem}"
    return None


def _check_strings(value: Any) -> str | None:
    items = [value] if isinstance(value, str) else value
    if not isinstance(items, list) or not all(isinstance(x, str) and x for x in items):
        return f"must be a string or a list of non-empty strings, not {_kind_of(value)}"
    return None


def _check_layers(value: Any) -> str | None:
    from bundler.plan.prune import parse_layers

    if isinstance(value, str):
        return _usage(parse_layers, value)
    ok = isinstance(value, list) and all(
        isinstance(x, int) and not isinstance(x, bool) and x >= 0 for x in value
    )
    return None if ok else f"must be a list of layer numbers or 'L0,L1,...', not {value!r}"


def _usage(check: Any, value: Any) -> str | None:
    try:
        check(value)
    except BundlerError as exc:
        return str(exc)
    return None


def _check_template(value: Any) -> str | None:
    return _check_str(value) or _usage(check_template, value)


def _check_list(value: Any) -> str | None:
    return _want(value, list, "a list of models")


def _check_mapping(value: Any) -> str | None:
    return _want(value, dict, "a mapping of keys")


_CHECKS = {
    "bool": lambda v: _want(v, bool, "true or false"),
    "str": _check_str,
    "path": _check_str,
    "type": _check_type,
    "types": _check_types,
    "codec": _check_codec,
    "count": _check_count,
    "bits": _check_bits,
    "format": _check_format,
    "size": _check_size,
    "target_size": _check_target_size,
    "target_bpw": _check_target_bpw,
    "candidates": _check_candidates,
    "pairs": _check_pairs,
    "strings": _check_strings,
    "layers": _check_layers,
    "template": _check_template,
    "models": _check_list,
    "batch": _check_mapping,
}
