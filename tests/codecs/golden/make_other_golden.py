"""Write the golden encodings of IQ4_NL, IQ4_XS, IQ3_XXS, IQ3_S, IQ1_M, TQ1_0, TQ2_0, MXFP4,
NVFP4, Q1_0 and Q2_0, once.

Run from the repository root: `python tests/codecs/golden/make_other_golden.py`. The input
(other/input.f32) is the K-quant golden input (make_kquant_golden.py: 8 rows of 256 values
covering zero sub-blocks, tiny, huge and outlying values); existing files are never
overwritten (the C oracle tests check the same encodings against ggml).
"""

from __future__ import annotations

import sys
from pathlib import Path

HERE = Path(__file__).parent / "other"
sys.path[:0] = [str(Path(__file__).parent), str(Path(__file__).parents[1])]

import write_once  # noqa: E402
from make_kquant_golden import golden_input  # noqa: E402

CODECS = (
    "iq4_nl", "iq4_xs", "iq3_xxs", "iq3_s", "iq2_s", "iq1_m", "tq1_0", "tq2_0", "mxfp4", "nvfp4",
    "q1_0", "q2_0",
)  # fmt: skip


def main() -> None:
    write_once.write_missing(HERE, golden_input, CODECS)


if __name__ == "__main__":
    main()
