"""`bundler diff --plot` and `bundler quantize --dry-run --plot`: real PNGs of the expected
size with drawn content; without matplotlib a usage error naming the extra, nothing written."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import run_cli

from bundler.plot import layer_and_kind

pytestmark = pytest.mark.realfile


def _png(path) -> np.ndarray:
    from matplotlib import image

    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    return image.imread(str(path))


def _drawn(pixels: np.ndarray) -> float:
    """The fraction of pixels that are not the white background."""
    return float(np.mean(np.any(pixels[..., :3] < 0.95, axis=-1)))


@pytest.fixture(scope="module")
def minilm_q4(minilm_safetensors, tmp_path_factory):
    out = tmp_path_factory.mktemp("plot") / "minilm-q4_0.gguf"
    run_cli("quantize", str(minilm_safetensors), "--type", "q4_0", "-q", "-o", str(out), check=True)
    return out


def test_diff_plot_draws_errors_by_layer_and_a_layer_by_kind_heatmap(
    plot_extra, minilm_safetensors, minilm_q4, tmp_path
):
    png = tmp_path / "diff.png"
    run_cli("diff", str(minilm_safetensors), str(minilm_q4), "--plot", str(png), check=True)
    pixels = _png(png)
    assert pixels.shape[:2] == (900, 1200)
    assert _drawn(pixels) > 0.3  # the heatmap alone covers about a third
    heatmap = pixels[520:820, 200:1000, :3]  # inside the lower panel
    assert len(np.unique(heatmap.reshape(-1, 3), axis=0)) > 10  # a range of colours


def test_quantize_dry_run_plot_draws_bytes_by_layer_and_codec(
    plot_extra, minilm_safetensors, tmp_path
):
    png, out = tmp_path / "plan.png", tmp_path / "out.gguf"
    run_cli(
        "quantize", str(minilm_safetensors), "-o", str(out), "--target-bpw", "6",
        "--dry-run", "--plot", str(png), "-q", check=True,
    )  # fmt: skip
    assert not out.exists()
    pixels = _png(png)
    assert pixels.shape[:2] == (500, 1000)
    assert _drawn(pixels) > 0.1
    assert len(np.unique(pixels[..., :3].reshape(-1, 3), axis=0)) > 20


def test_quantize_plot_works_for_a_file_type_plan_too(plot_extra, minilm_safetensors, tmp_path):
    png = tmp_path / "plan.png"
    run_cli(
        "quantize", str(minilm_safetensors), "-o", str(tmp_path / "o.gguf"), "--type", "Q4_0",
        "--dry-run", "--plot", str(png), "-q", check=True,
    )  # fmt: skip
    assert _png(png).shape[:2] == (500, 1000)


@pytest.fixture
def no_matplotlib(tmp_path, monkeypatch):
    """An environment where `import matplotlib` fails, as it does without the extra."""
    hidden = tmp_path / "hide" / "matplotlib"
    hidden.mkdir(parents=True)
    (hidden / "__init__.py").write_text("raise ImportError(\"No module named 'matplotlib'\")\n")
    monkeypatch.setenv("PYTHONPATH", str(hidden.parent))


@pytest.mark.parametrize("command", ["diff", "quantize"])
def test_without_matplotlib_plots_are_a_usage_error_naming_the_extra(
    minilm_safetensors, minilm_q4, tmp_path, no_matplotlib, command
):
    png = tmp_path / "x.png"
    if command == "diff":
        args = ["diff", str(minilm_safetensors), str(minilm_q4)]
    else:
        args = ["quantize", str(minilm_safetensors), "-o", str(tmp_path / "o.gguf"), "--dry-run"]
        args += ["--type", "q8_0"]
    done = run_cli(*args, "--plot", str(png))
    assert done.returncode == 2
    assert "pip install 'bundler[plot]'" in done.stderr and "Traceback" not in done.stderr
    assert not png.exists()
    assert run_cli(*args).returncode == 0  # nothing else changes


@pytest.mark.parametrize(
    ("name", "layer", "kind"),
    [("blk.12.attn_q.weight", 12, "attn_q.weight"),
     ("encoder.layer.3.attention.self.query.weight", 3, "attention.self.query.weight"),
     ("model.layers.0.mlp.down_proj.weight", 0, "mlp.down_proj.weight"),
     ("token_embd.weight", None, "token_embd.weight")],
)  # fmt: skip
def test_layers_and_kinds_are_read_from_tensor_names(name, layer, kind):
    assert layer_and_kind(name) == (layer, kind)
