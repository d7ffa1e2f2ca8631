"""comparison.html renders in a real headless browser (skipped when no Chromium/Chrome is installed; CI does not
depend on one: `apt-get install chromium` enables it on Debian)."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from compare_helpers import nlvr2_run, vqa_run
from PIL import Image

from harness.cli.main import cli

BROWSERS = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")


def _browser() -> str | None:
    return next((path for name in BROWSERS if (path := shutil.which(name))), None)


@pytest.mark.skipif(_browser() is None, reason="no headless Chromium/Chrome installed")
def test_html_report_renders_in_headless_browser(tmp_path: Path) -> None:
    # One configuration per model (the preset with no overrides), so each model is drawn in its own colour.
    config = {"preset": "tiny", "overrides": {}, "device": "cpu"}
    vqa_run(tmp_path / "runs" / "pb", "pixelbert", [1.0, 0.0, 1.0] * 20, config=config,
            bench={"model": "pixelbert", "task": "vqa", "inference": {"samples_per_second": 100.0}})
    vqa_run(tmp_path / "runs" / "rg", "region", [0.0, 0.0, 1.0] * 20, config=config,
            bench={"model": "region", "task": "vqa", "inference": {"samples_per_second": 20.0}})
    nlvr2_run(tmp_path / "runs" / "pb-n", "pixelbert", [True, False] * 30, config=config)
    result = CliRunner().invoke(cli, ["compare", str(tmp_path / "runs"), "--out", str(tmp_path / "rep"),
                                      "--resamples", "500"])
    assert result.exit_code == 0, result.output
    page = tmp_path / "rep" / "comparison.html"
    shot = tmp_path / "shot.png"
    browser = _browser()
    assert browser is not None
    # No network needed: the page is one file; --no-sandbox because tests may run as root in containers.
    proc = subprocess.run([browser, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
                           f"--screenshot={shot}", "--window-size=1400,2400", page.as_uri()],
                          capture_output=True, text=True, timeout=120)
    assert shot.is_file(), proc.stderr[-2000:]
    pixels = np.asarray(Image.open(shot).convert("RGB"))
    assert pixels.shape[0] >= 1000 and pixels.shape[1] >= 1000
    # Rendered content, not a blank page: many distinct colours (text plus the inline plot images' bars).
    colours = np.unique(pixels.reshape(-1, 3), axis=0)
    assert len(colours) > 50
    # The model colours of the inline plots (pixelbert blue #1f77b4, region red #d62728) are on screen.
    flat = pixels.reshape(-1, 3).astype(int)
    for rgb in ((0x1F, 0x77, 0xB4), (0xD6, 0x27, 0x28)):
        assert (np.abs(flat - rgb).sum(axis=1) < 40).sum() > 200, f"colour {rgb} not rendered"
    dom = subprocess.run([browser, "--headless", "--no-sandbox", "--disable-gpu", "--dump-dom", page.as_uri()],
                         capture_output=True, text=True, timeout=120).stdout
    assert "pixelbert" in dom and "Paired significance tests" in dom
