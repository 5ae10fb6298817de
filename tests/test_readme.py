"""The README's Python snippets run as written, in a fresh interpreter, on real files:
`model.gguf` is SmolLM2-135M's Q4_1 GGUF (quantized, as most GGUFs are) and
`model.safetensors` is MiniLM's float32 SafeTensors. Every snippet that works on those
files runs here; the others (batch, vectors, affine) work on files of the reader's own."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

README = Path(__file__).resolve().parents[1] / "README.md"
BLOCK = re.compile(r"^```python\n(.*?)^```$", re.S | re.M)


#: A snippet whose save leaves tensors out by surprise fails.
STRICT = "import warnings, bundler; warnings.simplefilter('error', bundler.PlanWarning)\n"


#: The files the snippets run here work on.
FILES = ('"model.gguf"', '"model.safetensors"')


def _snippets() -> list[str]:
    blocks = BLOCK.findall(README.read_text(encoding="utf-8"))
    return [b for b in blocks if any(name in b for name in FILES)]


def test_the_readme_has_python_snippets():
    assert len(_snippets()) >= 1 and all(s.strip() for s in _snippets())


@pytest.mark.parametrize("index", range(len(_snippets())))
def test_a_readme_snippet_runs_as_written(index, smollm2_gguf, minilm_safetensors, tmp_path):
    (tmp_path / "model.gguf").symlink_to(smollm2_gguf)
    (tmp_path / "model.safetensors").symlink_to(minilm_safetensors)
    done = subprocess.run(
        [sys.executable, "-c", STRICT + _snippets()[index]],
        cwd=tmp_path, capture_output=True, text=True,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert "Traceback" not in done.stderr
    assert (tmp_path / "model.gguf").resolve() == smollm2_gguf.resolve()  # inputs untouched
