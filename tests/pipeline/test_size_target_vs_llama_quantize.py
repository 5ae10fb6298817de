"""bundler's size target against llama-quantize's presets on SmolLM2 (its Q4_1 file decoded
to F32): llama-quantize writes Q4_K_M / Q3_K_M, bundler is given the size of that file as
`--target-size`, and both are compared with the F32 source by `bundler diff`.

The error compared is the total squared weight error, sum over tensors of rmse^2 * values
(the diff's figures), which is the allocation's objective without an importance matrix
(every tensor's sensitivity 1). Q4_1 is left out of bundler's candidates: the F32 source
is the decoding of a Q4_1 file, so Q4_1 would reproduce it exactly, and the comparison
would measure that coincidence rather than the allocation.
"""

from __future__ import annotations

import math
import os

import pytest

from bundler.diff import diff
from bundler.pipeline import quantize
from bundler.plan.curves import CANDIDATES

pytestmark = [pytest.mark.oracle_c, pytest.mark.realfile]

NOT_THE_SOURCE_CODEC = [c for c in CANDIDATES if c != "q4_1"]
PRESETS = ["Q4_K_M", pytest.param("Q3_K_M", marks=pytest.mark.slow)]


def total_squared_error(original, approximation) -> float:
    """Sum over the tensors of rmse^2 * values, from `bundler diff`'s rows."""
    rows = diff(original, approximation)["tensors"]
    assert all(r["error"] is None for r in rows)
    return math.fsum(r["rmse"] ** 2 * math.prod(r["shape"]) for r in rows)


@pytest.mark.parametrize("preset", PRESETS)
def test_size_target_beats_the_preset_of_the_same_size(
    llama_quantize, smollm2_f32_gguf, tmp_path, preset
):
    from tools.reference.llama_quantize import run

    theirs, ours = tmp_path / f"{preset}.gguf", tmp_path / "bundler.gguf"
    run(smollm2_f32_gguf, theirs, preset)
    size = os.path.getsize(theirs)
    report = quantize(smollm2_f32_gguf, ours, target_size=size, candidates=NOT_THE_SOURCE_CODEC)
    assert os.path.getsize(ours) <= size
    assert os.path.getsize(ours) == report.plan.allocation.predicted_bytes
    mine = total_squared_error(smollm2_f32_gguf, ours)
    preset_error = total_squared_error(smollm2_f32_gguf, theirs)
    assert mine < preset_error
    # the sampled prediction is close to what the whole tensors show
    assert report.plan.allocation.predicted_error == pytest.approx(mine, rel=0.05)
