"""GGUF checks beyond what the reader enforces: with `--strict`, llama.cpp's own rules."""

from __future__ import annotations

from bundler.bundle import Bundle
from bundler.containers.gguf.rules import check_llama_rules
from bundler.containers.runtimes import affine_refused
from bundler.problems import Problem


def check(bundle: Bundle, files: list[str]) -> list[Problem]:
    """The reader checks the whole structure from the headers: nothing is left."""
    return []


def check_strict(bundle: Bundle, files: list[str]) -> list[Problem]:
    """Every rule of llama.cpp's reader each file of the set breaks, and tensors llama.cpp
    cannot run."""
    problems = [
        Problem(f"llama.cpp would refuse it: {message}", "llama.cpp", path)
        for path in files
        for message in check_llama_rules(path)
    ]
    return problems + affine_refused(bundle, bundle.path or files[0], "llama.cpp")
