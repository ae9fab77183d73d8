"""W&B through Lightning's WandbLogger (offline, no network): the atlas stage logs the atlas
as an image and the cells as a table with one row and icon per cell; its outputs go in as an
artifact."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import wandb_offline
from conftest import tiny_config

from mti_lightning.journeys.atlas import run_atlas
from mti_lightning.journeys.atlas.face import ATLAS_OUTPUTS
from mti_lightning.shells.wandb_record import track_outputs


def test_atlas_stage_logs_image_and_table(
    atlas_run: tuple[Path, dict],
    image_folder: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import wandb
    from lightning.pytorch.loggers import WandbLogger

    monkeypatch.setenv("WANDB_SILENT", "true")
    monkeypatch.setenv("WANDB_MODE", "offline")
    run_dir = tmp_path / "run"
    shutil.copytree(atlas_run[0], run_dir)
    logger = WandbLogger(save_dir=str(tmp_path), offline=True, project="atlas-test")
    cfg = tiny_config(image_folder, split_icons=True)
    try:
        run_atlas(cfg, run_dir, stage="atlas", logger=logger)
        # what `mti experiment=atlas` does next: the outputs as an artifact, the run finished
        track_outputs(logger, run_dir, "atlas", ATLAS_OUTPUTS, cfg.to_dict())
    finally:
        logger.experiment.finish()
        # finish() can return while W&B's service still writes the run file (its artifact
        # record last); teardown waits for the service, so the file read below is whole
        wandb.teardown()
    media = next(tmp_path.glob("wandb/offline-run-*/files/media"))
    tables = list(media.rglob("*.table.json"))
    assert len(tables) == 1
    table = json.loads(tables[0].read_text())
    n_cells = len(json.loads((run_dir / "atlas" / "cells.json").read_text()))
    assert table["columns"][:3] == ["cell", "n_images", "activation"]
    assert table["columns"][-1] == "icon" and len(table["data"]) == n_cells
    assert list(media.rglob("atlas/atlas_*.png"))
    (artifact,) = [a for a in wandb_offline.artifacts(tmp_path) if a.type == "atlas"]
    names = {c.path for c in artifact.manifest.contents}
    assert {"atlas/atlas.png", "atlas/cells.json", "atlas_config.json"} <= names
    assert any(n.startswith("icons/png/cell_") for n in names)
