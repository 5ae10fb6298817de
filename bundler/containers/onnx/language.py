"""Running ONNX causal language models in ONNX Runtime for `bundler.agreement`: a model that
takes `input_ids` (int64, batch x tokens; an `attention_mask` or `position_ids` input is
filled in when declared) and gives the logits (batch x tokens x vocabulary) as its `logits`
output, or its first. An ONNX file carries no tokenizer, so the text is tokenized by
another file's vocabulary (`--tokenizer`, such as the GGUF the model was exported from)."""

from __future__ import annotations

import os
from typing import Any

import numpy as np

from bundler.containers.onnx.runtime import session
from bundler.errors import BundlerError, UsageError

#: The inputs of a causal language model export that bundler fills in.
TOKENS, MASK, POSITIONS = "input_ids", "attention_mask", "position_ids"


class OnnxLanguageModel:
    """One ONNX language model in an ONNX Runtime CPU session, tokenized by `tokenizer`."""

    def __init__(self, path: str, context: int, threads: int | None, tokenizer: Any):
        self.path = os.fspath(path)
        if tokenizer is None:
            raise UsageError(
                f"{self.path}: an ONNX file carries no tokenizer; pass --tokenizer FILE (a GGUF "
                "file with the model's vocabulary, such as the one it was exported from)"
            )
        import onnxruntime

        self._session = session(self.path, threads)
        self.runtime = f"ONNX Runtime {onnxruntime.__version__}"
        names = {i.name for i in self._session.get_inputs()}
        if TOKENS not in names or names - {TOKENS, MASK, POSITIONS}:
            raise UsageError(
                f"{self.path}: not a causal language model bundler can run over a text: its "
                f"inputs are {', '.join(sorted(names))}, where {TOKENS} (with "
                f"{MASK} and {POSITIONS} optional) is expected"
            )
        self._inputs = names
        outputs = [o.name for o in self._session.get_outputs()]
        self._output = "logits" if "logits" in outputs else outputs[0]
        self._tokenizer = tokenizer
        self.bos = tokenizer.bos
        self.vocab_size = int(self._run([self.bos if self.bos is not None else 0]).shape[-1])

    def tokenize(self, text: bytes) -> list[int]:
        """`text`'s tokens by the tokenizer's vocabulary (its beginning-of-sequence first)."""
        return self._tokenizer.tokenize(text)

    def logits(self, tokens: list[int], first: int) -> np.ndarray:
        """The logits (float32, positions x vocabulary) at positions `first` ..
        `len(tokens) - 2` of `tokens`."""
        return self._run(tokens)[first : len(tokens) - 1]

    def _run(self, tokens: list[int]) -> np.ndarray:
        ids = np.asarray([tokens], np.int64)
        feeds = {TOKENS: ids}
        if MASK in self._inputs:
            feeds[MASK] = np.ones_like(ids)
        if POSITIONS in self._inputs:
            feeds[POSITIONS] = np.arange(ids.shape[1], dtype=np.int64)[None, :]
        try:
            out = self._session.run([self._output], feeds)[0]
        except Exception as exc:  # onnxruntime's own exception types
            raise BundlerError(f"{self.path}: ONNX Runtime failed to run the text: {exc}") from None
        if out.ndim != 3 or out.shape[:2] != ids.shape:
            raise UsageError(
                f"{self.path}: output {self._output!r} has shape {list(out.shape)}, not the "
                f"logits of {ids.shape[1]} tokens (batch x tokens x vocabulary)"
            )
        return np.asarray(out[0], np.float32)

    def close(self) -> None:
        self._tokenizer.close()
