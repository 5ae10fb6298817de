"""ONNX (a protobuf `ModelProto`, read and written through the `onnx` package, the
optional extra `bundler[onnx]`): every tensor of a model as a bundle, and back.

Reading finds tensors in graph initializers, `Constant` nodes and `If`/`Loop`/`Scan`
subgraph bodies (graph.py names them), with external-data files checked against their
sizes. Weight-only quantization that keeps a model runnable is `rewrite.py`, not `write`.
The on-disk conventions are in formats/onnx.md.
"""

from __future__ import annotations

from typing import Any

from bundler.bundle import Bundle
from bundler.containers.onnx.checks import check, check_strict
from bundler.containers.onnx.details import OnnxDetails
from bundler.containers.onnx.reader import read, sniff, sniff_path
from bundler.containers.onnx.schema import NAME
from bundler.containers.onnx.writer import save_model, write

TITLE = "ONNX"
EXTENSIONS = ("onnx",)
SPLIT_OPTION = None
WRITES_FOLDER = False
DETAILS = OnnxDetails


def read_header(path: str) -> Bundle:
    """The same as `read`: the model's protobuf is the header, and reading it checks every
    tensor's place."""
    return read(path)


def describe(bundle: Bundle) -> OnnxDetails:
    """The ONNX details of `bundle` (a weights-only model's defaults when it was not read
    from one)."""
    return OnnxDetails.of(bundle) or OnnxDetails()


# Beyond the entry points every format has, ONNX models can be rewritten in their own
# format (weight-only quantization), compared by running them, and benchmarked: the command
# line asks a format for these three by name.


def quantize_native(
    src: str,
    dst: str,
    *,
    type: str,
    per_channel: bool = False,
    group_size: int | None = None,
    tensor_types: list[tuple[str, str]] | None = None,
    matmul_nbits: bool = False,
    allow_requantize: bool = False,
    force: bool = False,
    dry_run: bool = False,
) -> dict[str, Any]:
    """Quantize the weights of the model `src` into the ONNX model `dst` (rewrite.py);
    `type` is int8, uint8, int4 or uint4; the report as plain data."""
    from bundler.containers.onnx.rewrite import Options, parse_type, quantize_file
    from bundler.errors import UsageError

    if parse_type(type) is None:
        raise UsageError(f"--type {type} quantizes nothing; use int8, uint8, int4 or uint4")
    if group_size is not None and group_size < 2:
        raise UsageError("--group-size must be at least 2")
    for _, kind in tensor_types or ():
        parse_type(kind)
    options = Options(
        type=type, per_channel=per_channel, block_size=group_size,
        tensor_types=list(tensor_types or ()), matmul_nbits=matmul_nbits,
        allow_requantize=allow_requantize,
    )  # fmt: skip
    return quantize_file(src, dst, options, force=force, dry_run=dry_run)


def compare_models(original: str, quantized: str, **options: Any) -> dict[str, Any]:
    """Structure, weights, sizes and ONNX Runtime outputs of two models (compare.py)."""
    from bundler.containers.onnx.compare import validate_pair

    return validate_pair(original, quantized, **options)


def dequantized(bundle: Bundle) -> Bundle:
    """The bundle with quantized weights as the floats the model computes (compare.py)."""
    from bundler.containers.onnx.compare import dequantized_bundle

    return dequantized_bundle(bundle)


def benchmark_models(original: str, quantized: str, **options: Any) -> dict[str, Any]:
    """Load time, latency, peak memory and size of two models (benchmark.py)."""
    from bundler.containers.onnx.benchmark import benchmark

    return benchmark(original, quantized, **options)


def language_model(
    path: str, *, context: int, threads: int | None = None, tokenizer: Any = None
) -> Any:
    """The causal language model at `path` in ONNX Runtime, its text tokenized by
    `tokenizer` (another format's `tokenizer(path)`): `bundler.agreement`'s runtime for ONNX
    files (language.py)."""
    from bundler.containers.onnx.language import OnnxLanguageModel

    return OnnxLanguageModel(path, context, threads, tokenizer)


__all__ = [
    "DETAILS", "EXTENSIONS", "NAME", "SPLIT_OPTION", "TITLE", "WRITES_FOLDER",
    "benchmark_models", "check", "check_strict", "compare_models", "dequantized", "describe",
    "language_model", "quantize_native", "read", "read_header", "save_model", "sniff",
    "sniff_path", "write",
]  # fmt: skip
