"""Which tokens of a text are run and scored, as llama.cpp's `llama-perplexity` chooses them.

The whole text is tokenized once (with the model's beginning-of-sequence token when its
vocabulary adds one) and cut into `len(tokens) // context` chunks of `context` tokens; a
partial last chunk is dropped. Each chunk is run from an empty cache, its first token
replaced by the beginning-of-sequence token when the vocabulary adds one. Only the second
half is scored: the logits at positions `context // 2` .. `context - 2` predict the tokens
after them, so every scored token has at least `context // 2` tokens before it.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

#: The least context that scores a token in every chunk.
MIN_CONTEXT = 4


@dataclass(frozen=True)
class Chunking:
    """The chunks of one tokenized text."""

    tokens: tuple[int, ...]
    context: int
    #: chunks scored (all of them, or the first `limit`)
    count: int
    #: the token put first in every chunk, None when the vocabulary adds none
    bos: int | None

    @classmethod
    def of(cls, tokens: list[int], context: int, limit: int | None, bos: int | None) -> Chunking:
        available = len(tokens) // context
        count = available if limit is None else min(limit, available)
        return cls(tuple(tokens), context, count, bos)

    @property
    def available(self) -> int:
        """Whole chunks in the text."""
        return len(self.tokens) // self.context

    @property
    def first(self) -> int:
        """The first position whose logits are scored."""
        return self.context // 2

    @property
    def scored_per_chunk(self) -> int:
        return self.context - 1 - self.first

    def inputs(self, i: int) -> list[int]:
        """The tokens run for chunk `i`."""
        chunk = list(self.tokens[i * self.context : (i + 1) * self.context])
        if self.bos is not None:
            chunk[0] = self.bos
        return chunk

    def targets(self, i: int) -> np.ndarray:
        """The tokens the scored logits of chunk `i` predict."""
        start = i * self.context
        return np.asarray(self.tokens[start + self.first + 1 : start + self.context])
