"""llama.cpp's `llama-perplexity --kl-divergence` (tools.reference.llama_perplexity, built
from the same source distribution as the other references) as the judge of what a
quantization does to SmolLM2-135M's outputs, on llama.cpp's docs/build.md in chunks of 256
tokens (8 chunks here; the README's table is over the whole text).

The must-show of the size target: given the size of llama-quantize's Q4_K_M / Q3_K_M file
(made with the real importance matrix), bundler's size-targeted file with the same matrix is
no larger and its tokens' distributions are closer to the original's (lower mean KL
divergence). Q4_1 is left out of bundler's candidates: the F32 source is the decoding of a
Q4_1 file, so Q4_1 would rebuild it exactly and the comparison would measure that.
"""

from __future__ import annotations

import os

import pytest

from bundler.pipeline import quantize
from bundler.plan.curves import CANDIDATES

pytestmark = [pytest.mark.oracle_c, pytest.mark.realfile]

CHUNKS = 8
NOT_THE_SOURCE_CODEC = [c for c in CANDIDATES if c != "q4_1"]


@pytest.fixture(scope="module")
def f32_base(llama_perplexity, smollm2_f32_gguf, tmp_path_factory):
    """The F32 model's log-probabilities over `CHUNKS` chunks, stored once."""
    from tools.reference.llama_perplexity import base_logits

    path = tmp_path_factory.mktemp("kl-base") / "f32.kld"
    assert base_logits(smollm2_f32_gguf, path, chunks=CHUNKS) == CHUNKS
    return path


def test_the_model_against_itself_has_no_divergence_and_the_same_tokens_on_top(
    f32_base, smollm2_f32_gguf
):
    from tools.reference.llama_perplexity import compare

    same = compare(f32_base, smollm2_f32_gguf)
    assert (same.chunks, same.tokens) == (CHUNKS, CHUNKS * (256 - 1 - 128))
    # the stored log-probabilities are rounded to 16 bits: not exactly zero
    assert 0 <= same.mean_kl < 1e-4 and same.p99_kl < 1e-3
    assert same.same_top > 0.999
    assert same.ppl == pytest.approx(same.ppl_base, rel=1e-4)
    assert 1 < same.ppl_base < 100


@pytest.mark.long
@pytest.mark.parametrize("preset", ["Q4_K_M", "Q3_K_M"])
def test_a_size_target_with_the_matrix_beats_the_preset_of_the_same_size_in_kl(
    f32_base, smollm2_f32_gguf, llama_quantize, real_imatrix, tmp_path, preset
):
    from tools.reference.llama_perplexity import compare
    from tools.reference.llama_quantize import run

    theirs, ours = tmp_path / f"{preset}.gguf", tmp_path / "bundler.gguf"
    run(smollm2_f32_gguf, theirs, preset, "--imatrix", str(real_imatrix))
    size = os.path.getsize(theirs)
    quantize(
        smollm2_f32_gguf, ours, target_size=size, imatrix=real_imatrix,
        candidates=NOT_THE_SOURCE_CODEC,
    )  # fmt: skip
    assert os.path.getsize(ours) <= size
    mine, preset_kl = compare(f32_base, ours), compare(f32_base, theirs)
    assert mine.mean_kl < preset_kl.mean_kl, (mine, preset_kl)
    assert preset_kl.mean_kl > 1e-3  # a real quantization, measurably apart from the source
