"""`compare_text`: run an original model and quantized versions of it over a text, chunk by
chunk, in the models' own runtime, and measure how far each quantized model's next-token
distributions moved from the original's (perplexity of each, KL divergence, top-1
agreement), as llama.cpp's `llama-perplexity --kl-divergence` does.

The runtime comes from the models' format (`language_model` in its `format.py`); the token
choices are `chunks.py`'s and the statistics `stats.py`'s. Only one chunk's logits per model
are held at a time.
"""

from __future__ import annotations

import contextlib
import math
import os
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from bundler.agreement.chunks import MIN_CONTEXT, Chunking
from bundler.agreement.stats import Tally
from bundler.errors import FileNotFound, UsageError

#: llama-perplexity's default context.
DEFAULT_CONTEXT = 512

#: `progress(chunks)` may return a callback called with 1 after each chunk.
Progress = Callable[[int], Callable[[int], Any] | None]


class LanguageModel(Protocol):
    """A model loaded in its runtime (a format's `language_model(path, context, threads)`)."""

    path: str
    runtime: str
    vocab_size: int
    #: the token that starts every chunk, None when the vocabulary adds none
    bos: int | None

    def tokenize(self, text: bytes) -> list[int]: ...

    def logits(self, tokens: list[int], first: int) -> np.ndarray: ...

    def close(self) -> None: ...


@dataclass(frozen=True)
class TextAgreement:
    """How one quantized model's next-token distributions over a text compare with the
    original's."""

    original: str
    quantized: str
    text: str
    runtime: str
    context: int
    #: chunks scored, and whole chunks in the text
    chunks: int
    chunks_available: int
    text_tokens: int
    scored_tokens: int
    original_bytes: int
    quantized_bytes: int
    perplexity_original: float
    perplexity_quantized: float
    kl_divergence_mean: float
    kl_divergence_p99: float
    kl_divergence_max: float
    #: "p50", "p90", "p95", "p99", "p99_9" -> value
    kl_divergence_percentiles: dict[str, float]
    #: the fraction of scored positions whose most likely token is the same in both models
    top1_agreement: float
    #: root mean square of the change in the next token's probability
    delta_p_rms: float
    #: the largest mean KL divergence that passes; None: no gate
    threshold: float | None = None

    @property
    def passed(self) -> bool:
        return self.threshold is None or self.kl_divergence_mean <= self.threshold

    def as_dict(self) -> dict[str, Any]:
        return {**asdict(self), "passed": self.passed}


def open_model(
    path: str | os.PathLike[str],
    context: int,
    threads: int | None,
    tokenizer: str | os.PathLike[str] | None = None,
) -> LanguageModel:
    """The model at `path` loaded in its format's runtime, tokenized by the vocabulary of
    the file `tokenizer` when given (for formats that carry none); a usage error when
    bundler has no runtime for its format."""
    path = os.fspath(path)
    opener = _entry(
        path, "language_model", "comparing models over a text needs a runtime for {} language "
        "models; bundler runs GGUF models (in llama.cpp) and ONNX models (in ONNX Runtime)",
    )  # fmt: skip
    vocab = None if tokenizer is None else open_tokenizer(tokenizer)
    try:
        return opener(path, context=context, threads=threads, tokenizer=vocab)
    except BaseException:
        if vocab is not None:
            vocab.close()
        raise


def open_tokenizer(path: str | os.PathLike[str]) -> Any:
    """The vocabulary of the file at `path` as a tokenizer (its format's `tokenizer`)."""
    path = os.fspath(path)
    opener = _entry(
        path, "tokenizer", "bundler reads a tokenizer from a GGUF file's vocabulary, not from {}"
    )
    return opener(path)


def _entry(path: str, name: str, missing: str) -> Any:
    """Entry `name` of the format of the file at `path`; a usage error saying `missing`
    (formatted with the format's title) when the format has none."""
    from bundler.containers import detect, module

    fmt = module(detect(path))
    entry = getattr(fmt, name, None)
    if entry is None:
        raise UsageError(f"{path}: {missing.format(fmt.TITLE)}")
    return entry


def read_text(path: str | os.PathLike[str]) -> bytes:
    """The text file's bytes, one trailing newline dropped (as llama.cpp's `-f` reads it)."""
    path = os.fspath(path)
    if os.path.isdir(path):
        raise UsageError(f"{path}: is a directory, not a text file")
    if not os.path.exists(path):
        raise FileNotFound(path)
    data = Path(path).read_bytes()
    return data.removesuffix(b"\n")


def compare_text(
    original: str | os.PathLike[str],
    quantized: str | os.PathLike[str],
    text: str | os.PathLike[str],
    **options: Any,
) -> TextAgreement:
    """`quantized` against `original` over the text file `text`; options as `compare_texts`."""
    return compare_texts(original, [quantized], text, **options)[0]


def compare_texts(
    original: str | os.PathLike[str],
    candidates: Sequence[str | os.PathLike[str]],
    text: str | os.PathLike[str],
    *,
    context: int = DEFAULT_CONTEXT,
    chunks: int | None = None,
    threads: int | None = None,
    threshold: float | None = None,
    progress: Progress | None = None,
    tokenizer: str | os.PathLike[str] | None = None,
) -> list[TextAgreement]:
    """Each of `candidates` against `original` over the text file `text`, in chunks of
    `context` tokens (the first `chunks` of them, or all); the original runs once per chunk.
    `threshold` is the largest mean KL divergence that passes; `threads` the runtime's
    threads (its default when None); `tokenizer` a file whose vocabulary tokenizes the text
    for models that carry none (ONNX)."""
    _check_options(context, chunks, threshold, threads)
    if not candidates:
        raise UsageError("no quantized model to compare with the original")
    data = read_text(text)
    with contextlib.ExitStack() as stack:
        base = _opened(stack, original, context, threads, tokenizer)
        others = [_opened(stack, path, context, threads, tokenizer) for path in candidates]
        tokens = base.tokenize(data)
        for other in others:
            _check_same_tokens(base, other, tokens, data)
        chunking = Chunking.of(tokens, context, chunks, base.bos)
        if chunking.count < 1:
            raise UsageError(
                f"{os.fspath(text)}: the text is {len(tokens):,} tokens, fewer than one chunk "
                f"of {context:,} (a smaller --ctx, or a longer text)"
            )
        tallies = [Tally() for _ in others]
        update = progress(chunking.count) if progress else None
        for i in range(chunking.count):
            inputs, targets = chunking.inputs(i), chunking.targets(i)
            reference = base.logits(inputs, chunking.first)
            for other, tally in zip(others, tallies, strict=True):
                tally.add(reference, other.logits(inputs, chunking.first), targets)
            if update:
                update(1)
    return [
        TextAgreement(
            original=base.path,
            quantized=other.path,
            text=os.fspath(text),
            runtime=base.runtime,
            context=context,
            chunks=chunking.count,
            chunks_available=chunking.available,
            text_tokens=len(tokens),
            original_bytes=os.path.getsize(base.path),
            quantized_bytes=os.path.getsize(other.path),
            threshold=threshold,
            **tally.summary(),
        )
        for other, tally in zip(others, tallies, strict=True)
    ]


def _opened(
    stack: contextlib.ExitStack,
    path: str | os.PathLike[str],
    context: int,
    threads: int | None,
    tokenizer: str | os.PathLike[str] | None,
) -> LanguageModel:
    model = open_model(path, context, threads, tokenizer)
    stack.callback(model.close)
    return model


def _check_options(
    context: int, chunks: int | None, threshold: float | None, threads: int | None
) -> None:
    if context < MIN_CONTEXT:
        raise UsageError(f"the context must be at least {MIN_CONTEXT} tokens, not {context}")
    if chunks is not None and chunks < 1:
        raise UsageError(f"the number of chunks must be at least 1, not {chunks}")
    if threads is not None and threads < 1:
        raise UsageError(f"the number of threads must be at least 1, not {threads}")
    if threshold is not None and not (math.isfinite(threshold) and threshold >= 0):
        raise UsageError(f"the KL divergence threshold must be a number >= 0, not {threshold}")


def _check_same_tokens(
    base: LanguageModel, other: LanguageModel, tokens: list[int], data: bytes
) -> None:
    if other.vocab_size != base.vocab_size:
        raise UsageError(
            f"{other.path} has a vocabulary of {other.vocab_size:,} tokens and {base.path} "
            f"of {base.vocab_size:,}: the KL divergence needs one vocabulary"
        )
    if other.bos != base.bos or other.tokenize(data) != tokens:
        raise UsageError(
            f"{other.path} and {base.path} tokenize the text differently: "
            "the KL divergence needs one tokenizer"
        )
