"""Write the golden encodings of the element and legacy block codecs, once.

Run from the repository root: `python tests/codecs/golden/make_legacy_golden.py`. Existing
files are never overwritten: a golden file changes only by deleting it on purpose and
reviewing the new bytes.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

HERE = Path(__file__).parent / "legacy"
sys.path[:0] = [str(Path(__file__).parent), str(Path(__file__).parents[1])]

import edge_cases  # noqa: E402
import write_once  # noqa: E402

CODECS = ("f16", "bf16", "q4_0", "q4_1", "q5_0", "q5_1", "q8_0", "q8_1")


def golden_input() -> np.ndarray:
    """8 rows of 256 values covering the rounding corners."""
    rows = [
        edge_cases.normal_weights(2, 256),
        edge_cases.bf16_rounded(1, 256),
        edge_cases.ties(256)[[0, 3]],
        edge_cases.zero_blocks(256)[1:2],
        edge_cases.huge_scales(256)[1:2],
        edge_cases.subnormal_scales(256)[2:3],
    ]
    return np.concatenate(rows).astype(np.float32)


def main() -> None:
    write_once.write_missing(HERE, golden_input, CODECS)


if __name__ == "__main__":
    main()
