"""The census demo's numbers and its grid of the top units, on the small searched census."""

from __future__ import annotations

import json
from pathlib import Path

from PIL import Image

from mti_lightning.journeys.census.demo import GRID, grid_figure, summarise


def test_summary_counts_layers_and_search_over_data(searched_census: Path) -> None:
    table = json.loads((searched_census / "units.json").read_text())
    search = json.loads((searched_census / "search.json").read_text())["units"]
    summary = summarise(searched_census)
    assert summary["units"] == len(table["units"])
    assert summary["images"] == table["n_images"]
    assert sum(layer["units"] for layer in summary["layers"].values()) == len(table["units"])
    assert sum(layer["searched"] for layer in summary["layers"].values()) == len(search) == 4
    beats = sum(entry["search_over_data"] > 1 for entry in search.values())
    assert sum(layer["search_beats_data"] for layer in summary["layers"].values()) == beats
    first = summary["top"][0]
    assert first["spec"] == table["units"][0]["spec"]
    assert first["top_image"] == table["units"][0]["top"][0]["file"]
    assert first["search_over_data"] == search[first["spec"]]["search_over_data"]


def test_grid_has_a_row_per_searched_unit(searched_census: Path, tmp_path: Path) -> None:
    path = tmp_path / "top.png"
    grid_figure(searched_census, path)
    with Image.open(path) as img:
        width, height = img.size
    # 4 searched units as rows, the GRID's columns: taller per row than wide per column
    assert width > 0 and height > 0
    assert abs(width / height - (1.3 * len(GRID)) / (1.45 * 4)) < 0.2
