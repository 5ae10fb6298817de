"""The contracts under contracts/: loading, schema validation and the falsification check.

A contract is a YAML file stating the invariants of one codec family, one container format
or the recipes, each with the pytest node ids of the tests that try to break it
(contracts/contract.schema.json). contracts/index.yaml lists every contract file.

`check(root)` verifies that every contract file matches the schema, that the index and the
files on disk agree, that the codec facts a contract states are the facts table's, that every
named test exists (collected by pytest in a subprocess) and, unless `run=False`, that every
named test passes (one pytest subprocess for all of them).

    python -m bundler.contracts [ROOT] [--no-run]
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

CONTRACTS_DIR = "contracts"
INDEX = "index.yaml"
SCHEMA = "contract.schema.json"
INDEX_SCHEMA = "index.schema.json"
#: Upper bound for the pytest subprocesses (collection, then the named tests).
TIMEOUT_SECONDS = 900

_NODE = re.compile(
    r"^(?P<file>tests/[^:\s]+\.py)::(?P<name>[A-Za-z_][A-Za-z0-9_]*)(?P<param>\[.*\])?$"
)


# --------------------------------------------------------------------------------------------
# a JSON-schema validator for the keywords the contract schemas use


_TYPES = {
    "object": dict,
    "array": list,
    "string": str,
    "boolean": bool,
    "null": type(None),
}


def _is_type(value: Any, kind: str) -> bool:
    if kind == "integer":
        return isinstance(value, int) and not isinstance(value, bool)
    if kind == "number":
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    return isinstance(value, _TYPES[kind])


def validate(value: Any, schema: dict[str, Any], root: dict[str, Any] | None = None) -> list[str]:
    """Problems of `value` against a JSON schema (draft 2020-12 subset), as 'path: problem'.

    Supported keywords: $ref (local), type, enum, const, required, properties,
    additionalProperties, propertyNames, items, minItems, uniqueItems, minLength, pattern,
    minimum. A schema using any other keyword is refused, so nothing is silently unchecked.
    """
    return list(_validate(value, schema, root or schema, "$"))


_KNOWN = {
    "$schema", "$id", "$defs", "$ref", "$comment", "title", "description", "type", "enum",
    "const", "required", "properties", "additionalProperties", "propertyNames", "items",
    "minItems", "uniqueItems", "minLength", "pattern", "minimum", "examples",
}  # fmt: skip


def _validate(value: Any, schema: dict[str, Any], root: dict[str, Any], at: str) -> Iterator[str]:
    unknown = set(schema) - _KNOWN
    if unknown:
        raise ValueError(f"schema keywords not supported by this validator: {sorted(unknown)}")
    if "$ref" in schema:
        ref = schema["$ref"]
        if not ref.startswith("#/"):
            raise ValueError(f"only local $ref is supported, got {ref!r}")
        target: Any = root
        for part in ref[2:].split("/"):
            target = target[part]
        yield from _validate(value, target, root, at)
    kinds = schema.get("type")
    if kinds is not None:
        kinds = [kinds] if isinstance(kinds, str) else kinds
        if not any(_is_type(value, k) for k in kinds):
            yield f"{at}: expected {' or '.join(kinds)}, got {type(value).__name__}"
            return
    if "enum" in schema and value not in schema["enum"]:
        yield f"{at}: {value!r} is not one of {schema['enum']}"
    if "const" in schema and value != schema["const"]:
        yield f"{at}: must be {schema['const']!r}"
    if isinstance(value, str):
        if len(value) < schema.get("minLength", 0):
            yield f"{at}: shorter than {schema['minLength']} characters"
        if "pattern" in schema and not re.search(schema["pattern"], value):
            yield f"{at}: {value!r} does not match {schema['pattern']}"
    if _is_type(value, "number") and "minimum" in schema and value < schema["minimum"]:
        yield f"{at}: {value} is below {schema['minimum']}"
    if isinstance(value, list):
        if len(value) < schema.get("minItems", 0):
            yield f"{at}: fewer than {schema['minItems']} items"
        if schema.get("uniqueItems"):
            seen = [json.dumps(v, sort_keys=True) for v in value]
            if len(set(seen)) != len(seen):
                yield f"{at}: items are not unique"
        if "items" in schema:
            for i, item in enumerate(value):
                yield from _validate(item, schema["items"], root, f"{at}[{i}]")
    if isinstance(value, dict):
        for key in schema.get("required", ()):
            if key not in value:
                yield f"{at}: missing required key {key!r}"
        props = schema.get("properties", {})
        extra = schema.get("additionalProperties", True)
        for key, item in value.items():
            if "propertyNames" in schema:
                yield from _validate(key, schema["propertyNames"], root, f"{at}.{key}<name>")
            if key in props:
                yield from _validate(item, props[key], root, f"{at}.{key}")
            elif extra is False:
                yield f"{at}: unexpected key {key!r}"
            elif isinstance(extra, dict):
                yield from _validate(item, extra, root, f"{at}.{key}")


# --------------------------------------------------------------------------------------------
# contracts


@dataclass(frozen=True)
class Contract:
    """One parsed contract file."""

    path: Path
    data: dict[str, Any]

    @property
    def id(self) -> str:
        return str(self.data.get("id"))

    def node_ids(self) -> list[tuple[str, str]]:
        """(invariant id, node id) for every falsification test the contract names."""
        return [
            (inv.get("id", "?"), node)
            for inv in self.data.get("invariants", ())
            for node in inv.get("falsified_by", ())
        ]


@dataclass
class CheckReport:
    """What `check` found: one line per problem; empty when every contract holds."""

    contracts: list[Contract] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)
    node_ids: list[str] = field(default_factory=list)
    ran: bool = False

    @property
    def ok(self) -> bool:
        return not self.problems


def _load_yaml(path: Path) -> Any:
    try:
        return yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError) as exc:
        raise ValueError(f"{path}: cannot be read as YAML: {exc}") from None


def load(root: str | os.PathLike[str]) -> tuple[dict[str, Any], list[Contract], list[str]]:
    """(index, contracts, problems) of the project at `root`; nothing is run."""
    base = Path(root) / CONTRACTS_DIR
    problems: list[str] = []
    schema = json.loads((base / SCHEMA).read_text(encoding="utf-8"))
    index_schema = json.loads((base / INDEX_SCHEMA).read_text(encoding="utf-8"))
    index = _load_yaml(base / INDEX)
    problems += [f"{INDEX}: {p}" for p in validate(index, index_schema)]
    if problems:
        return index, [], problems

    listed = {entry["file"]: entry["id"] for entry in index["contracts"]}
    on_disk = {
        p.relative_to(base).as_posix()
        for p in base.rglob("*.yaml")
        if p.relative_to(base).as_posix() != INDEX
    }
    problems += [f"{f}: contract file not listed in {INDEX}" for f in sorted(on_disk - set(listed))]
    problems += [f"{f}: listed in {INDEX} but missing" for f in sorted(set(listed) - on_disk)]

    contracts, seen = [], {}
    for name in sorted(set(listed) & on_disk):
        try:
            data = _load_yaml(base / name)
        except ValueError as exc:
            problems.append(str(exc))
            continue
        contract = Contract(base / name, data)
        errors = validate(data, schema)
        problems += [f"{name}: {p}" for p in errors]
        if errors:
            continue
        if contract.id != listed[name]:
            problems.append(f"{name}: id {contract.id!r} but {INDEX} says {listed[name]!r}")
        if contract.id in seen:
            problems.append(f"{name}: id {contract.id!r} also used by {seen[contract.id]}")
        seen[contract.id] = name
        inv_ids = [inv["id"] for inv in data["invariants"]]
        if len(set(inv_ids)) != len(inv_ids):
            problems.append(f"{name}: invariant ids are not unique")
        problems += [f"{name}: {p}" for p in _codec_facts_problems(data)]
        contracts.append(contract)
    return index, contracts, problems


def _codec_facts_problems(data: dict[str, Any]) -> list[str]:
    """Codec facts a contract states that disagree with bundler's facts table."""
    from bundler.codecs import get
    from bundler.errors import UnknownCodecError

    problems = []
    for name, stated in data.get("codecs", {}).items():
        try:
            facts = get(name).facts
        except UnknownCodecError:
            problems.append(f"codec {name!r} is not in the facts table")
            continue
        actual = {
            "block_size": facts.block_size,
            "type_size": facts.type_size,
            "ggml_id": facts.ggml_id,
            "apr_code": facts.apr_code,
            "encodable": facts.has_kernels,
        }
        for key, value in stated.items():
            if key in actual and actual[key] != value:
                problems.append(
                    f"codec {name}: {key} is {actual[key]!r}, the contract says {value!r}"
                )
    return problems


# --------------------------------------------------------------------------------------------
# running the named tests


def _pytest(root: Path, args: list[str]) -> subprocess.CompletedProcess:
    """pytest in a subprocess as CI runs it: no cache, and a fresh hypothesis example
    database, so that examples a developer's earlier runs saved do not decide the outcome."""
    cmd = [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-o", "addopts=", *args]
    with tempfile.TemporaryDirectory(prefix="bundler-contracts-") as scratch:
        env = {**os.environ, "HYPOTHESIS_STORAGE_DIRECTORY": scratch}
        return subprocess.run(
            cmd, cwd=root, env=env, capture_output=True, text=True, timeout=TIMEOUT_SECONDS,
            check=False,
        )  # fmt: skip


def collect(root: Path, files: list[str]) -> set[str]:
    """Every test node id pytest collects from `files` (paths relative to `root`)."""
    present = [f for f in files if (root / f).is_file()]
    if not present:
        return set()
    done = _pytest(root, ["--collect-only", "-q", *present])
    return {line.strip() for line in done.stdout.splitlines() if "::" in line}


def missing_node_ids(named: list[str], collected: set[str]) -> list[str]:
    """The named ids that match no collected test (a bare name matches its parametrizations)."""
    missing = []
    for node in named:
        if node in collected:
            continue
        if "[" not in node and any(c.startswith(node + "[") for c in collected):
            continue
        missing.append(node)
    return missing


def failed_node_ids(output: str) -> list[str]:
    """Node ids from the FAILED/ERROR lines of a pytest `-rfE` summary."""
    found = []
    for line in output.splitlines():
        m = re.match(r"^(FAILED|ERROR) (\S+::\S+?)(?: - .*)?$", line)
        if m:
            found.append(m.group(2))
    return found


def check(root: str | os.PathLike[str] = ".", run: bool = True) -> CheckReport:
    """Check every contract of the project at `root`; see the module docstring."""
    root = Path(root).resolve()
    report = CheckReport()
    try:
        _, contracts, problems = load(root)
    except (OSError, ValueError) as exc:
        report.problems.append(str(exc))
        return report
    report.contracts, report.problems = contracts, problems

    owners: dict[str, list[str]] = {}
    for contract in contracts:
        for inv, node in contract.node_ids():
            owners.setdefault(node, []).append(f"{contract.path.name}:{inv}")
            if not _NODE.match(node):
                report.problems.append(f"{contract.path.name}:{inv}: {node!r} is not a node id")
    named = sorted(n for n in owners if _NODE.match(n))
    report.node_ids = named

    files = sorted({_NODE.match(n).group("file") for n in named})
    missing = missing_node_ids(named, collect(root, files))
    report.problems += [f"{', '.join(owners[n])}: test {n} does not exist" for n in missing]
    runnable = [n for n in named if n not in missing]
    if run and runnable:
        done = _pytest(root, ["-q", "-rfE", "--tb=line", *runnable])
        report.ran = True
        failed = failed_node_ids(done.stdout)
        for node in runnable:
            hits = [f for f in failed if f == node or f.startswith(node + "[")]
            if hits:
                report.problems.append(f"{', '.join(owners[node])}: test {hits[0]} fails")
        if done.returncode not in (0, 5) and not failed:
            tail = "\n".join(done.stdout.splitlines()[-5:])
            report.problems.append(
                f"pytest exited {done.returncode} without a failure list: {tail}"
            )
    return report


def main(argv: list[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    run = "--no-run" not in args
    roots = [a for a in args if a != "--no-run"]
    report = check(roots[0] if roots else ".", run=run)
    what = "exist and pass" if report.ran else "exist"
    for problem in report.problems:
        print(problem)
    print(
        f"{len(report.contracts)} contracts, {len(report.node_ids)} falsification tests: "
        + ("every one holds" if report.ok else f"{len(report.problems)} problems")
        + (f" (tests {what})" if report.ok else "")
    )
    return 0 if report.ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
