"""Every Python snippet of the README runs as written, in a fresh interpreter, on real
files: `model.gguf` is SmolLM2-135M's Q4_1 GGUF (quantized, as most GGUFs are),
`model.safetensors` MiniLM's float32 SafeTensors, `embeddings.npy` MiniLM's token
embeddings, and `zoo.yaml` the README's quantize-rs-style config on those two models."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import bundler

README = Path(__file__).resolve().parents[1] / "README.md"
BLOCK = re.compile(r"^```python\n(.*?)^```$", re.S | re.M)


#: A snippet whose save leaves tensors out by surprise fails.
STRICT = "import warnings, bundler; warnings.simplefilter('error', bundler.PlanWarning)\n"


#: The config file the snippets run: the README's quantize-rs example on the models here.
ZOO = """\
bits: 8
per_channel: true
models:
  - input: model.safetensors
    output: quantized/minilm_int8.safetensors
"""


def _snippets() -> list[str]:
    return BLOCK.findall(README.read_text(encoding="utf-8"))


def test_the_readme_has_python_snippets():
    assert len(_snippets()) >= 4 and all(s.strip() for s in _snippets())


@pytest.mark.parametrize("index", range(len(_snippets())))
def test_a_readme_snippet_runs_as_written(index, smollm2_gguf, minilm_safetensors, tmp_path):
    (tmp_path / "model.gguf").symlink_to(smollm2_gguf)
    (tmp_path / "model.safetensors").symlink_to(minilm_safetensors)
    (tmp_path / "zoo.yaml").write_text(ZOO)
    words = bundler.open(minilm_safetensors).tensors["embeddings.word_embeddings.weight"]
    np.save(tmp_path / "embeddings.npy", words.numpy()[:2000])
    done = subprocess.run(
        [sys.executable, "-c", STRICT + _snippets()[index]],
        cwd=tmp_path, capture_output=True, text=True,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert "Traceback" not in done.stderr
    assert (tmp_path / "model.gguf").resolve() == smollm2_gguf.resolve()  # inputs untouched
