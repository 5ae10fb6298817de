"""Measuring an importance matrix: run a GGUF model in llama.cpp (the optional extra
`bundler[llama]`) over a text and keep, for every weight matrix the model multiplies by,
the sum of the squares of each input column's activations and how many activations it saw
(`Activations`), what `llama-imatrix` computes.

The text is tokenized and cut into chunks as `llama-imatrix` cuts it (`bundler.agreement.
chunks`: chunks of `context` tokens, each run from an empty cache, its first token the
beginning-of-sequence token when the vocabulary adds one). Every position's output is
asked for, so the last layer multiplies every token too. llama.cpp calls back
(`cb_eval`) for each node of its compute graph: a matrix product (MUL_MAT) of a weight
named `blk.*` (and `output.weight` with `process_output`) by at least 16 float32
activation rows is collected, as llama-imatrix does. Sums are kept in float64.
Mixture-of-experts products (MUL_MAT_ID) are not measured: such a model is a usage error.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from bundler.errors import BundlerError, UsageError
from bundler.importance import ggml_graph
from bundler.importance.matrix import ImportanceMatrix

#: llama-imatrix's default context.
DEFAULT_CONTEXT = 512
#: A product with fewer activation rows is skipped (as llama-imatrix skips them).
MIN_ROWS = 16


@dataclass
class Activations:
    """Per weight: the sum over the activations seen of each column's square, and their
    count; with the text, context and chunks they were measured on."""

    sums: dict[str, np.ndarray] = field(default_factory=dict)
    counts: dict[str, int] = field(default_factory=dict)
    text: str = ""
    context: int = DEFAULT_CONTEXT
    chunks: int = 0
    tokens: int = 0

    def add(self, name: str, rows: np.ndarray) -> None:
        squares = np.einsum("ij,ij->j", rows, rows, dtype=np.float64)
        if name in self.sums:
            if self.sums[name].shape != squares.shape:
                raise BundlerError(
                    f"{name}: activations of {squares.size} and {self.sums[name].size} columns"
                )
            self.sums[name] += squares
        else:
            self.sums[name] = squares
        self.counts[name] = self.counts.get(name, 0) + rows.shape[0]

    def matrix(self) -> ImportanceMatrix:
        """The importance matrix: each column's mean square, divided in float32 as
        llama-quantize divides the sums and counts of a matrix file."""
        entries = {
            n: s.astype(np.float32) / np.float32(self.counts[n])
            for n, s in sorted(self.sums.items())
        }
        return ImportanceMatrix(
            entries, datasets=(self.text,), chunk_count=self.chunks, chunk_size=self.context
        )


class _Collector:
    """The eval callback: which nodes to see (`ask`) and what to keep of them. An
    exception inside stops the computation and is raised again after it."""

    def __init__(self, lib: Any, process_output: bool, found: Activations):
        self.lib, self.process_output, self.found = lib, process_output, found
        self.error: BaseException | None = None
        self.checked = False

    def __call__(self, address: int, ask: bool, user_data: Any) -> bool:
        try:
            return self.wanted(address) if ask else self.collect(address)
        except BaseException as exc:  # must not unwind through C
            self.error = self.error or exc
            return False

    def weight(self, node: ggml_graph.GgmlTensor) -> str:
        return _weight_name(ggml_graph.GgmlTensor.from_address(node.src[0]).name.decode())

    def wanted(self, address: int) -> bool:
        if not self.checked:
            ggml_graph.check_layout(self.lib, address)
            self.checked = True
        op = ggml_graph.op(self.lib, address)
        if op == "MUL_MAT_ID":
            raise UsageError(
                "the model multiplies by experts (MUL_MAT_ID): bundler does not measure "
                "mixture-of-experts models; use llama-imatrix's matrix (--imatrix)"
            )
        if op != "MUL_MAT":
            return False
        node = ggml_graph.GgmlTensor.from_address(address)
        src1 = ggml_graph.GgmlTensor.from_address(node.src[1])
        if src1.ne[1] < MIN_ROWS or src1.type != ggml_graph.F32:
            return False
        name = self.weight(node)
        return name.startswith("blk.") or (self.process_output and name == "output.weight")

    def collect(self, address: int) -> bool:
        node = ggml_graph.GgmlTensor.from_address(address)
        src0 = ggml_graph.GgmlTensor.from_address(node.src[0])
        name = self.weight(node)
        if src0.ne[2] * src0.ne[3] != 1:
            raise UsageError(
                f"{name}: a weight of {src0.ne[2] * src0.ne[3]} matrices is not measured"
            )
        src1 = ggml_graph.GgmlTensor.from_address(node.src[1])
        self.found.add(name, ggml_graph.rows(self.lib, src1, node.src[1]))
        return True


def _weight_name(name: str) -> str:
    """A weight's name without the back-end's decorations ("CUDA0#w#0" -> "w"), as
    llama-imatrix names its entries."""
    if "#" in name:
        head, _, rest = name.partition("#")
        name = rest.partition("#")[0] if rest else head
    return name


def measure(
    model: str | os.PathLike[str],
    text: str | os.PathLike[str],
    *,
    context: int = DEFAULT_CONTEXT,
    chunks: int | None = None,
    threads: int | None = None,
    process_output: bool = False,
    progress: Callable[[int], Callable[[int], Any] | None] | None = None,
) -> Activations:
    """The activation statistics of the GGUF `model` run over the text file `text` in
    chunks of `context` tokens (the first `chunks`, or all); `progress(chunks)` may return a
    callback called with 1 after each chunk."""
    from bundler.agreement.chunks import MIN_CONTEXT, Chunking
    from bundler.agreement.compare import read_text
    from bundler.containers.gguf.llama import LlamaModel, llama_cpp

    if context < max(MIN_CONTEXT, MIN_ROWS):
        raise UsageError(f"the context must be at least {max(MIN_CONTEXT, MIN_ROWS)} tokens")
    if chunks is not None and chunks < 1:
        raise UsageError(f"the number of chunks must be at least 1, not {chunks}")
    if threads is not None and threads < 1:
        raise UsageError(f"the number of threads must be at least 1, not {threads}")
    data = read_text(text)
    _check_gguf(model)
    lib = llama_cpp()
    found = Activations(text=os.fspath(text), context=context)
    loaded = LlamaModel(os.fspath(model), context, threads)
    try:
        tokens = loaded.tokenize(data)
        chunking = Chunking.of(tokens, context, chunks, loaded.bos)
        if chunking.count < 1:
            raise UsageError(
                f"{os.fspath(text)}: the text is {len(tokens):,} tokens, fewer than one chunk "
                f"of {context:,} (a smaller context, or a longer text)"
            )
        collector = _Collector(ggml_graph.ggml(lib), process_output, found)
        update = progress(chunking.count) if progress else None
        with loaded.observed(collector) as run:
            for i in range(chunking.count):
                ok = run(chunking.inputs(i))
                if collector.error is not None:
                    raise collector.error
                if not ok:
                    raise BundlerError(f"{os.fspath(model)}: llama.cpp failed to run chunk {i}")
                found.chunks += 1
                found.tokens += context
                if update:
                    update(1)
    finally:
        loaded.close()
    if not found.sums:
        raise UsageError(
            f"{os.fspath(model)}: no matrix product of a blk.* weight was seen; bundler "
            "measures llama.cpp's decoder models"
        )
    return found


def _check_gguf(model: str | os.PathLike[str]) -> None:
    from bundler.containers import detect

    fmt = detect(os.fspath(model))
    if fmt != "gguf":
        raise UsageError(
            f"{os.fspath(model)}: measuring activations runs the model in llama.cpp, which "
            f"needs a GGUF model, not {fmt}; convert it first (bundler convert ... -o x.gguf)"
        )
