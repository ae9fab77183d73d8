"""The census in an offline W&B run (Lightning's WandbLogger): the ``census`` table holds one row
per unit with its images, the ``census_layers`` table one per layer, the summary a value per
layer, and the site goes in as an artifact."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import wandb_offline

from mti_lightning.journeys.census.tracking import log_census


def test_census_table_has_a_row_per_unit(
    site: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """On the census of the site tests (searched, its site built, a hostile unit in it)."""
    import wandb
    from lightning.pytorch.loggers import WandbLogger

    monkeypatch.setenv("WANDB_SILENT", "true")
    monkeypatch.setenv("WANDB_MODE", "offline")
    census = site
    logger = WandbLogger(save_dir=str(tmp_path), offline=True, project="census-test")
    try:
        log_census(census, logger)
    finally:
        logger.experiment.finish()
        wandb.teardown()  # the run file is whole once W&B's service is done
    units = json.loads((census / "units.json").read_text())
    media = next(tmp_path.glob("wandb/offline-run-*/files/media"))
    tables = {p.name.rsplit("_", 2)[0]: json.loads(p.read_text()) for p in media.rglob("*.table.json")}
    table = tables["census"]
    assert len(table["data"]) == len(units["units"])
    assert len(tables["census_layers"]["data"]) == len(units["layers"])
    columns = table["columns"]
    assert columns[:3] == ["rank", "spec", "layer"]
    assert {"mti", "mti_plus", "viz_minus", "data_plus", "scatter"} <= set(columns)
    # the cells' images travel in the table's run_table artifact: an MTI per searched unit,
    # a scatter per unit
    searched = json.loads((census / "search.json").read_text())["units"]
    records = wandb_offline.artifacts(tmp_path)
    (cells,) = [a for a in records if a.type == "run_table" and a.name.endswith("-census")]
    names = [c.path for c in cells.manifest.contents]
    assert sum(n.endswith("/mti.png") for n in names) == len(searched)
    with_values = [r for r in units["units"] if (census / "data" / f"{r['layer']}.safetensors").is_file()]
    assert sum(n.endswith("/scatter.png") for n in names) == len(with_values)
    summary = wandb_offline.summary(tmp_path)
    for layer in units["layers"]:
        assert f"census/{layer['name']}/tension_mean" in summary
    (artifact,) = [a for a in records if a.type == "census"]
    names = {c.path for c in artifact.manifest.contents}
    assert {"index.html", "units.json", "search.json"} <= names
    assert sum(n.startswith("pages/") for n in names) == len(units["units"])
