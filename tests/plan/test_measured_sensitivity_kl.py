"""The measured sensitivity pays off in the model's outputs: SmolLM2-135M (F32) quantized
with `--target-size` at the sizes of llama-quantize's Q4_K_M and Q3_K_M presets, once with
every tensor's error weighed alike (the default without a matrix) and once with `--text`
(the importance matrix measured by running the model over llama.cpp's README); both run
in llama.cpp over another text (docs/build.md) by `bundler.agreement`, as `bundler
validate --text` runs them: the measured one has the lower mean KL divergence."""

from __future__ import annotations

import os

import pytest
from conftest import run_cli

from bundler.agreement import compare_texts
from bundler.plan.curves import CANDIDATES

pytestmark = [pytest.mark.long, pytest.mark.realfile, pytest.mark.oracle_c]

#: the F32 weights are Q4_1's decoding: Q4_1 would rebuild them exactly
NOT_THE_SOURCE_CODEC = ",".join(c for c in CANDIDATES if c != "q4_1")
CONTEXT, CHUNKS = 256, 8


@pytest.mark.parametrize("preset", ["Q4_K_M", "Q3_K_M"])
def test_measured_sensitivity_lowers_kl_at_the_presets_size(
    llama_runtime, smollm2_f32_gguf, llama_quantize, readme_md, build_md, tmp_path, preset
):
    from tools.reference.llama_quantize import run

    run(smollm2_f32_gguf, tmp_path / "preset.gguf", preset)
    size = os.path.getsize(tmp_path / "preset.gguf")
    files = {}
    for name, flags in (("alike", []), ("measured", ["--text", str(readme_md)])):
        files[name] = tmp_path / f"{name}.gguf"
        done = run_cli(
            "quantize", str(smollm2_f32_gguf), "-o", str(files[name]), "--target-size",
            str(size), "--candidates", NOT_THE_SOURCE_CODEC, "-q", *flags,
        )  # fmt: skip
        assert done.returncode == 0, done.stderr
        assert os.path.getsize(files[name]) <= size
    alike, measured = compare_texts(
        smollm2_f32_gguf, [files["alike"], files["measured"]], build_md,
        context=CONTEXT, chunks=CHUNKS,
    )  # fmt: skip
    assert measured.kl_divergence_mean < alike.kl_divergence_mean, (measured, alike)
    assert alike.kl_divergence_mean > 1e-3  # a real quantization
