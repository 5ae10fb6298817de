"""Running GGUF language models in llama.cpp through the `llama-cpp-python` package (the
optional extra `bundler[llama]`): tokenizing a text, and the logits of every position of a
chunk run from an empty cache."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable, Iterator
from types import ModuleType
from typing import Any

import numpy as np

from bundler.errors import BundlerError, UnsupportedFormatError, UsageError

EXTRA_HINT = "running GGUF models needs the optional extra: pip install 'bundler[llama]'"


def llama_cpp() -> ModuleType:
    """The `llama_cpp` package, or a usage error naming the extra."""
    try:
        import llama_cpp as module
    except ImportError:
        missing = "the `llama-cpp-python` package is not installed"
        raise UsageError(f"{EXTRA_HINT} ({missing})") from None
    return module


@contextlib.contextmanager
def _log_collected(lib: ModuleType) -> Iterator[list[str]]:
    """llama.cpp's error log lines while the block runs (it says why a model does not load;
    the Python package only says that it did not)."""
    lines: list[str] = []

    @lib.llama_log_callback
    def collect(level: int, text: bytes, user_data: object) -> None:
        if level == 3:  # GGML_LOG_LEVEL_ERROR
            lines.append(text.decode("utf-8", "replace").strip())

    lib.llama_log_set(collect, None)
    try:
        yield lines
    finally:
        from llama_cpp import _logger

        lib.llama_log_set(_logger.llama_log_callback, None)


def _loaded(lib: ModuleType, path: str, what: str, **params: Any) -> Any:
    """`llama_cpp.Llama` of the file at `path`; a file llama.cpp refuses is a typed error
    giving llama.cpp's reason for not loading `what`."""
    with _log_collected(lib) as log:
        try:
            return lib.Llama(model_path=path, verbose=False, **params)
        except (ValueError, RuntimeError) as exc:
            reason = "; ".join(line for line in log if line) or str(exc)
            raise UnsupportedFormatError(
                path, None, f"llama.cpp cannot load {what}: {reason}"
            ) from None


class LlamaModel:
    """One GGUF model loaded by llama.cpp with a context of `context` tokens, every
    position's logits kept (`logits_all`)."""

    def __init__(self, path: str, context: int, threads: int | None = None):
        from bundler.containers import open_header

        self.path = os.fspath(path)
        open_header(self.path)  # a file bundler refuses is a typed error before llama.cpp
        lib = llama_cpp()
        self.runtime = f"llama.cpp (llama-cpp-python {lib.__version__})"
        workers = {"n_threads": threads, "n_threads_batch": threads} if threads else {}
        self._llama = _loaded(
            lib, self.path, "it", n_ctx=context, n_batch=context, n_ubatch=context,
            logits_all=True, **workers,
        )  # fmt: skip
        model = self._llama._model
        if model.add_eos_token():
            self.close()
            raise UsageError(
                f"{self.path}: its vocabulary appends an end-of-sequence token to every text, "
                "which llama-perplexity refuses too"
            )
        self.vocab_size = int(self._llama.n_vocab())
        self.bos = int(self._llama.token_bos()) if model.add_bos_token() else None

    def tokenize(self, text: bytes) -> list[int]:
        """`text`'s tokens, the beginning-of-sequence token first when the vocabulary adds
        one; special tokens' text is read as plain text."""
        return list(self._llama.tokenize(text, add_bos=True, special=False))

    def logits(self, tokens: list[int], first: int) -> np.ndarray:
        """The logits (float32, positions x vocabulary) at positions `first` ..
        `len(tokens) - 2` of `tokens` run from an empty cache; valid until the next call."""
        self._llama.reset()
        try:
            self._llama.eval(tokens)
        except RuntimeError as exc:
            raise BundlerError(f"{self.path}: llama.cpp failed to run the text: {exc}") from None
        return self._llama.scores[first : len(tokens) - 1]

    @contextlib.contextmanager
    def observed(self, callback: Callable[[int, bool, Any], bool]) -> Iterator[RunChunk]:
        """A second context on the loaded model whose every compute-graph node is shown to
        `callback(tensor address, ask, user data)` (llama.cpp's `cb_eval`: with `ask` it
        says whether it wants to see the node computed; otherwise it returns False to stop).
        Yields `run(tokens)`: run `tokens` from an empty cache, every position's output
        asked for; True when llama.cpp ran them."""
        from llama_cpp import _internals

        lib = llama_cpp()
        hook = lib.ggml_backend_sched_eval_callback(callback)
        params = lib.llama_context_default_params()
        n = self._llama.n_ctx()
        params.n_ctx = params.n_batch = params.n_ubatch = n
        params.n_threads = params.n_threads_batch = self._llama.n_threads
        params.cb_eval, params.cb_eval_user_data = hook, None
        context = _internals.LlamaContext(model=self._llama._model, params=params, verbose=False)
        batch = _internals.LlamaBatch(n_tokens=n, embd=0, n_seq_max=1, verbose=False)

        def run(tokens: list[int]) -> bool:
            lib.llama_memory_clear(lib.llama_get_memory(context.ctx), True)
            batch.reset()
            batch.set_batch(tokens, 0, True)
            return lib.llama_decode(context.ctx, batch.batch) == 0

        try:
            yield run
        finally:
            batch.close()
            context.close()
            del hook

    def close(self) -> None:
        self._llama.close()


class LlamaVocab:
    """The vocabulary of a GGUF file loaded by llama.cpp without its weights: the tokenizer
    of a model in a format that carries none (an ONNX export), as `LlamaModel` tokenizes."""

    def __init__(self, path: str):
        from bundler.containers import open_header

        self.path = os.fspath(path)
        open_header(self.path)
        self._llama = _loaded(llama_cpp(), self.path, "its vocabulary", vocab_only=True)
        model = self._llama._model
        self.vocab_size = int(self._llama.n_vocab())
        self.bos = int(self._llama.token_bos()) if model.add_bos_token() else None

    def tokenize(self, text: bytes) -> list[int]:
        return list(self._llama.tokenize(text, add_bos=True, special=False))

    def close(self) -> None:
        self._llama.close()


#: Runs a chunk of tokens; True when llama.cpp ran them.
RunChunk = Callable[[list[int]], bool]
