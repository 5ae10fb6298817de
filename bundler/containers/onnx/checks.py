"""ONNX checks beyond what the reader enforces: with `--strict`, what the `onnx` package's
own checker says about the model file."""

from __future__ import annotations

from bundler.bundle import Bundle
from bundler.containers.onnx import deps
from bundler.problems import Problem


def check(bundle: Bundle, files: list[str]) -> list[Problem]:
    """The reader checks every tensor and external-data range: nothing is left."""
    return []


def check_strict(bundle: Bundle, files: list[str]) -> list[Problem]:
    """onnx.checker's complaint (full check, shapes inferred) about the model file."""
    path = files[0] if files else bundle.path
    return [
        Problem(f"onnx.checker refuses it: {message}", "onnx", path)
        for message in checker_problems(path)
    ]


def checker_problems(path: str) -> list[str]:
    """onnx.checker's complaint about the model at `path` (full check, shapes inferred),
    or nothing."""
    onnx = deps.onnx()
    try:
        onnx.checker.check_model(path, full_check=True)
    except (onnx.checker.ValidationError, onnx.shape_inference.InferenceError) as exc:
        return [str(exc).strip().splitlines()[0]]
    return []
