"""Write the golden weighted encodings (importance weights, llama-quantize --imatrix), once.

Run from the repository root: `python tests/codecs/golden/make_weighted_golden.py`. The input
is the K-quant golden input (make_kquant_golden.py), the weights a seeded importance row with
zeros and a wide range; existing files are never overwritten (the C oracle tests in
tests/codecs/test_weighted_oracle.py check the same encodings against ggml).
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

HERE = Path(__file__).parent / "weighted"
sys.path[:0] = [str(Path(__file__).parent), str(Path(__file__).parents[1])]

import make_kquant_golden  # noqa: E402
import write_once  # noqa: E402

CODECS = (
    "q4_0", "q4_1", "q5_0", "q5_1", "q2_k", "q3_k", "q4_k", "q5_k", "q6_k",
    "iq3_xxs", "iq3_s", "iq1_s", "iq1_m", "iq2_xxs", "iq2_xs", "iq2_s",
)  # fmt: skip


def golden_importance() -> np.ndarray:
    """256 weights: log-normal over about eight orders of magnitude, a zero sub-block of 16
    and a few zero columns."""
    w = np.exp(np.random.default_rng(15).normal(0.0, 3.0, 256))
    w[32:48] = 0.0
    w[::41] = 0.0
    return w.astype(np.float32)


def main() -> None:
    write_once.write_missing(HERE, make_kquant_golden.golden_input, CODECS, golden_importance)


if __name__ == "__main__":
    main()
