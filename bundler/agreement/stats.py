"""How far a quantized model's next-token distributions are from the original's, position by
position, as llama.cpp's `llama-perplexity --kl-divergence` defines it: the negative
log-likelihood of the next token under each model, the Kullback-Leibler divergence
KL(P_original || P_quantized) over the whole vocabulary, whether the two most likely tokens
agree, and the change in the next token's probability. Positions arrive a chunk at a time;
only the per-position KL values are kept (four bytes a position), never the logits."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

#: Positions put through one numpy step: bounds the float64 temporaries to
#: ROWS x vocabulary values (about 6 MiB each for a 49,152-token vocabulary).
ROWS = 16

#: The percentiles of the per-position KL divergence that a summary reports.
PERCENTILES = (50.0, 90.0, 95.0, 99.0, 99.9)


def log_softmax(logits: np.ndarray) -> np.ndarray:
    """Natural-log probabilities over the last axis, in float64."""
    x = np.asarray(logits, dtype=np.float64)
    x = x - x.max(axis=-1, keepdims=True)
    x -= np.log(np.exp(x).sum(axis=-1, keepdims=True))
    return x


@dataclass
class Tally:
    """Running sums over every scored position of two models' logits."""

    count: int = 0
    nll_original: float = 0.0
    nll_quantized: float = 0.0
    same_top: int = 0
    p_diff_squares: float = 0.0
    kl: list[np.ndarray] = field(default_factory=list)

    def add(self, original: np.ndarray, quantized: np.ndarray, targets: np.ndarray) -> None:
        """Score positions whose logits are the rows of `original` and `quantized`
        (positions x vocabulary) and whose next tokens are `targets`."""
        if original.shape != quantized.shape or original.shape[0] != len(targets):
            raise ValueError(
                f"logits {original.shape} and {quantized.shape} for {len(targets)} tokens"
            )
        targets = np.asarray(targets, dtype=np.int64)
        kl = np.empty(len(targets), dtype=np.float32)
        for start in range(0, len(targets), ROWS):
            rows = slice(start, start + ROWS)
            lp = log_softmax(original[rows])
            lq = log_softmax(quantized[rows])
            index = np.arange(lp.shape[0])
            nll_p = -lp[index, targets[rows]]
            nll_q = -lq[index, targets[rows]]
            kl[rows] = (np.exp(lp) * (lp - lq)).sum(axis=-1)
            self.nll_original += float(nll_p.sum())
            self.nll_quantized += float(nll_q.sum())
            # the first index of the largest logit, as llama.cpp picks it
            same = original[rows].argmax(axis=-1) == quantized[rows].argmax(axis=-1)
            self.same_top += int(same.sum())
            self.p_diff_squares += float(((np.exp(-nll_q) - np.exp(-nll_p)) ** 2).sum())
        self.kl.append(kl)
        self.count += len(targets)

    def summary(self) -> dict[str, Any]:
        """The statistics of every position scored so far (an empty tally has none)."""
        if not self.count:
            raise ValueError("no position was scored")
        kl = np.concatenate(self.kl).astype(np.float64)
        percentiles = np.percentile(kl, PERCENTILES)  # linear, as llama-perplexity's
        return {
            "scored_tokens": self.count,
            "perplexity_original": float(np.exp(self.nll_original / self.count)),
            "perplexity_quantized": float(np.exp(self.nll_quantized / self.count)),
            "kl_divergence_mean": float(kl.mean()),
            "kl_divergence_max": float(kl.max()),
            "kl_divergence_percentiles": {
                _label(p): float(v) for p, v in zip(PERCENTILES, percentiles, strict=True)
            },
            "kl_divergence_p99": float(percentiles[PERCENTILES.index(99.0)]),
            "top1_agreement": self.same_top / self.count,
            "delta_p_rms": float(np.sqrt(self.p_diff_squares / self.count)),
        }


def _label(p: float) -> str:
    return f"p{p:g}".replace(".", "_")
