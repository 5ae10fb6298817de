"""Write the golden encodings of the K-quants, once.

Run from the repository root: `python tests/codecs/golden/make_kquant_golden.py`. The input
(kquants/input.f32) is built from the seeded recipes in tests/codecs/kquant_cases.py; existing
files are never overwritten: a golden file changes only by deleting it on purpose and
reviewing the new bytes (the C oracle tests check the same encodings against ggml).
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

HERE = Path(__file__).parent / "kquants"
sys.path[:0] = [str(Path(__file__).parent), str(Path(__file__).parents[1])]

import kquant_cases as cases  # noqa: E402
import write_once  # noqa: E402

CODECS = ("q2_k", "q3_k", "q4_k", "q5_k", "q6_k", "q8_k")


def golden_input() -> np.ndarray:
    """8 rows of 256 values covering the corners of the K-quant searches."""
    rows = [
        cases.normal(1, 256),
        cases.bf16_rounded(1, 256),
        cases.zero_sub_blocks()[:1],
        cases.on_grid()[:1],
        cases.tiny()[3:4],
        cases.huge()[2:3],
        cases.outliers()[1:2, :256],
        cases.mixed_rows()[8:9, :256],
    ]
    return np.concatenate(rows).astype(np.float32)


def main() -> None:
    write_once.write_missing(HERE, golden_input, CODECS)


if __name__ == "__main__":
    main()
