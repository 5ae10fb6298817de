"""SafeTensors checks beyond what the reader enforces: with `--strict`, whether the
reference `safetensors` reader opens each file."""

from __future__ import annotations

from bundler.bundle import Bundle
from bundler.problems import Problem


def check(bundle: Bundle, files: list[str]) -> list[Problem]:
    """The reader checks the whole structure from the headers: nothing is left."""
    return []


def check_strict(bundle: Bundle, files: list[str]) -> list[Problem]:
    """Every file the reference SafeTensors reader refuses (a sharded checkpoint's index
    has no SafeTensors header and is skipped)."""
    import safetensors

    problems = []
    for path in files:
        if path.endswith(".json"):
            continue
        try:
            with safetensors.safe_open(path, framework="np") as f:
                f.keys()
        except Exception as exc:  # the reference reader's own error types
            problems.append(
                Problem(f"the reference SafeTensors reader refuses it: {exc}", "safetensors", path)
            )
    return problems
