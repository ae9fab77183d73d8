"""The viewer in headless Chromium: a screenshot shows the atlas, and a click on a cell (made
by the page itself from ``?cell=ROW_COL``, through the cell's click handler) opens its panel
with the icon's figures and the thumbnails of the images in the cell.

Needs ``/usr/bin/chromium`` (Debian: ``apt-get install -y chromium``); skipped without it.
"""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

CHROMIUM = Path("/usr/bin/chromium")
pytestmark = pytest.mark.skipif(
    not CHROMIUM.exists(),
    reason="headless Chromium not installed at /usr/bin/chromium (apt-get install -y chromium)",
)


def chromium(tmp_path: Path, *args: str) -> subprocess.CompletedProcess:
    flags = [
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        f"--user-data-dir={tmp_path / 'profile'}",
    ]
    return subprocess.run(
        [str(CHROMIUM), *flags, *args], capture_output=True, text=True, timeout=180, check=True
    )


def _longest_run(index: np.ndarray) -> np.ndarray:
    runs = np.split(index, np.flatnonzero(np.diff(index) != 1) + 1)
    return max(runs, key=len)


def test_screenshot_shows_the_atlas(atlas_run: tuple[Path, dict], tmp_path: Path) -> None:
    run_dir, _ = atlas_run
    shot = tmp_path / "shot.png"
    page = (run_dir / "atlas" / "atlas.html").as_uri()
    chromium(tmp_path, "--window-size=1200,800", f"--screenshot={shot}", page)
    with Image.open(shot) as img:
        pixels = np.asarray(img.convert("RGB")).astype(float)
    left = pixels[:, :700]
    rows = _longest_run(np.flatnonzero((np.abs(left - 250.0).max(2) > 2).mean(1) > 0.5))
    cols = _longest_run(np.flatnonzero((np.abs(left[rows] - 250.0).max(2) > 2).mean(0) > 0.5))
    assert rows.size > 300 and cols.size > 300  # a square that is not page background
    crop = pixels[rows[0] : rows[-1] + 1, cols[0] : cols[-1] + 1]
    with Image.open(run_dir / "atlas" / "atlas.png") as img:
        atlas = img.convert("RGB").resize((crop.shape[1], crop.shape[0]), Image.BILINEAR)
    assert np.abs(crop - np.asarray(atlas, dtype=float)).mean() < 4


def test_click_opens_a_cell(atlas_run: tuple[Path, dict], tmp_path: Path) -> None:
    run_dir, _ = atlas_run
    cells = json.loads((run_dir / "atlas" / "cells.json").read_text())
    cell = max(cells, key=lambda c: c["n_images"])
    row, col = cell["cell"]
    page = (run_dir / "atlas" / "atlas.html").as_uri() + f"?cell={row}_{col}"
    dom = chromium(tmp_path, "--virtual-time-budget=3000", "--dump-dom", page).stdout
    panel = re.search(r'<aside id="detail"[^>]*>.*?</aside>', dom, re.S)
    assert panel is not None
    text = panel.group(0)
    assert f'data-cell="{row}_{col}"' in text
    assert f"cell ({row}, {col}): {cell['n_images']} images" in text
    assert text.count('class="thumb"') == min(cell["n_images"], 4)
    for caption in ("icon", "full canvas", "+ part", "- part", "icon activation"):
        assert caption in text
    assert f'id="cell-{row}_{col}" class="cell open"' in dom or re.search(
        rf'class="cell open" id="cell-{row}_{col}"', dom
    )


@pytest.mark.slow
def test_hover_shows_a_search_marker(
    curve_atlas: Path, placed_search: Path, tmp_path: Path
) -> None:
    """A search run given to the viewer is drawn on the atlas (its image as a marker, its
    trajectory as a line) and its tip shows the image's figures (``?mti=0_0`` opens it)."""
    from mti_lightning.journeys.atlas import AtlasConfig, run_atlas

    run_dir = curve_atlas  # in place: the dataset pass's fingerprint holds its data's path
    cfg = AtlasConfig.from_dict(json.loads((run_dir / "atlas_config.json").read_text()))
    cfg.searches = [str(placed_search)]
    run_atlas(cfg, run_dir, "viewer")
    page = (run_dir / "atlas" / "atlas.html").as_uri() + "?mti=0_0"
    dom = chromium(tmp_path, "--virtual-time-budget=3000", "--dump-dom", page).stdout
    assert re.search(r'<img class="mti" id="mti-0_0"', dom)
    assert "<polyline" in dom
    tip = re.search(r'<div id="tip"[^>]*>.*?</div></div>', dom, re.S)
    assert tip is not None and 'data-mti="0_0"' in tip.group(0)
    assert "bn2:19@center" in tip.group(0) and "nearest cell" in tip.group(0)
