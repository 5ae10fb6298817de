"""`bundler report`: a self-contained HTML page (every figure an inline PNG, no network),
opened in a real headless Chromium (Debian's `chromium`): every figure decodes, the page logs
nothing to the console, and the screenshot shows drawn figures."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess

import numpy as np
import pytest
from conftest import run_cli

from bundler.report import FIGURES_ATTRIBUTE

pytestmark = pytest.mark.realfile
IN_CI = os.environ.get("CI") == "true"


@pytest.fixture(scope="module")
def chromium() -> str:
    found = shutil.which("chromium") or shutil.which("chromium-browser")
    if found is None:
        if IN_CI:
            pytest.fail("chromium is not installed (apt-get install -y chromium)")
        pytest.skip("chromium is not installed (apt-get install -y chromium)")
    return found


def _browse(chromium: str, page, *flags: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [chromium, "--headless", "--no-sandbox", "--disable-gpu", "--enable-logging=stderr",
         "--v=0", *flags, page.as_uri()],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip


@pytest.fixture(scope="module")
def report(plot_extra, minilm_safetensors, tmp_path_factory):
    """The report of MiniLM quantized to Q4_0 (GGUF) and by a 5-bit size target
    (SafeTensors)."""
    d = tmp_path_factory.mktemp("report")
    q4, sized = d / "minilm-q4_0.gguf", d / "minilm-5bpw.safetensors"
    run_cli("quantize", str(minilm_safetensors), "--type", "q4_0", "-q", "-o", str(q4), check=True)
    run_cli(
        "quantize", str(minilm_safetensors), "--target-bpw", "5", "-q", "-o", str(sized),
        check=True,
    )  # fmt: skip
    page = d / "report.html"
    done = run_cli(
        "report", str(minilm_safetensors), str(q4), str(sized), "-o", str(page), "--json",
        check=True,
    )  # fmt: skip
    return page, json.loads(done.stdout)


def test_the_report_is_one_self_contained_file(report):
    page, data = report
    text = page.read_text(encoding="utf-8")
    sources = re.findall(r'src="([^"]*)"', text)
    assert len(sources) == 3 and all(s.startswith("data:image/png;base64,") for s in sources)
    assert "http://" not in text and "https://" not in text and "<link" not in text
    rows = {os.path.basename(r["file"]): r for r in data["candidates"]}
    assert (
        rows["minilm-5bpw.safetensors"]["squared_error"] < rows["minilm-q4_0.gguf"]["squared_error"]
    )
    for r in rows.values():
        assert f"{r['bytes']:,}" in text and r["bytes"] == os.path.getsize(r["file"])


def test_chromium_decodes_every_figure_without_console_messages(chromium, report):
    page, _ = report
    done = _browse(chromium, page, "--dump-dom")
    assert done.returncode == 0, done.stderr[-2000:]
    assert f'{FIGURES_ATTRIBUTE}="3/3"' in done.stdout
    assert [line for line in done.stderr.splitlines() if ":CONSOLE" in line] == []


def test_chromium_screenshot_shows_the_figures(chromium, report, tmp_path):
    from matplotlib import image

    page, _ = report
    shot = tmp_path / "shot.png"
    done = _browse(
        chromium, page, "--hide-scrollbars", "--window-size=1280,2400",
        "--virtual-time-budget=10000", f"--screenshot={shot}",
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]
    pixels = image.imread(str(shot))[..., :3]
    assert pixels.shape[:2] == (2400, 1280)
    # the trade-off plot below the table (axes, points, labels on white: sparse) and the
    # first heatmap (mostly colour): drawn, in many colours
    for (top, bottom), drawn in (((300, 800), 0.01), ((1300, 1800), 0.3)):
        band = pixels[top:bottom]
        assert np.mean(np.any(band < 0.95, axis=-1)) > drawn
        assert len(np.unique(band.reshape(-1, 3), axis=0)) > 30


def test_an_existing_report_needs_force(minilm_safetensors, report):
    page, _ = report
    done = run_cli("report", str(minilm_safetensors), str(minilm_safetensors), "-o", str(page))
    assert done.returncode == 5 and "--force" in done.stderr


def test_without_matplotlib_the_report_is_a_usage_error_naming_the_extra(
    minilm_safetensors, tmp_path
):
    hidden = tmp_path / "hide" / "matplotlib"
    hidden.mkdir(parents=True)
    (hidden / "__init__.py").write_text("raise ImportError(\"No module named 'matplotlib'\")\n")
    out = tmp_path / "r.html"
    done = run_cli(
        "report", str(minilm_safetensors), str(minilm_safetensors), "-o", str(out),
        env={**os.environ, "PYTHONPATH": str(hidden.parent)},
    )  # fmt: skip
    assert done.returncode == 2 and "pip install 'bundler[plot]'" in done.stderr
    assert not out.exists()
