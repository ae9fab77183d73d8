"""A decomposition of a census unit, named in ``census.decompositions``, puts its components
(share, top channels, figure) on that unit's census page, and only there."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

import mti_lightning as mti
from mti_lightning.core.errors import MTIConfigError
from mti_lightning.world.curve_dataset import write_image_folder

OPTIONS = {"shard_size": 8, "batch_size": 4, "top_k": 3, "logger": None, "search": False,
           "site": True}


def test_a_decomposition_goes_on_its_units_page(tmp_path: Path):
    curves = write_image_folder(tmp_path / "curves", 20, 3, None, 0.3)
    mti.decompose("curvenet", "bn2:19@center", data=str(curves), k=2, render=False,
                  logger=None, run_dir=tmp_path / "dec")
    census = tmp_path / "run" / "census"
    with pytest.raises(MTIConfigError, match="holds no decompose/components.json"):
        mti.census("curvenet", ["bn2"], str(curves), run_dir=tmp_path / "run",
                   decompositions=[str(tmp_path)], **OPTIONS)
    mti.census("curvenet", ["bn2"], str(curves), run_dir=tmp_path / "run",
               decompositions=[str(tmp_path / "dec")], **OPTIONS)
    entry = json.loads((census / "decompositions.json").read_text())["bn2:19@center"]
    assert len(entry["components"]) == 4 and (census / entry["figure"]).is_file()
    pages = list((census / "pages").glob("*.html"))
    page = next(p for p in pages if p.name.startswith("bn2_19_center-")).read_text()
    assert "Decomposed attributions" in page and entry["figure"] in page
    assert sum("Decomposed attributions" in p.read_text() for p in pages) == 1
