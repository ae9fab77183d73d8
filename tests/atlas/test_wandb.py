"""W&B through Lightning's WandbLogger (offline, no network): the atlas stage logs the atlas
as an image and the cells as a table with one row and icon per cell."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from conftest import tiny_config

from mti_lightning.atlas import run_atlas


def test_atlas_stage_logs_image_and_table(
    atlas_run: tuple[Path, dict],
    image_folder: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from lightning.pytorch.loggers import WandbLogger

    monkeypatch.setenv("WANDB_SILENT", "true")
    monkeypatch.setenv("WANDB_MODE", "offline")
    run_dir = tmp_path / "run"
    shutil.copytree(atlas_run[0], run_dir)
    logger = WandbLogger(save_dir=str(tmp_path), offline=True, project="atlas-test")
    try:
        run_atlas(
            tiny_config(image_folder, split_icons=True), run_dir, stage="atlas", logger=logger
        )
    finally:
        logger.experiment.finish()
    media = next(tmp_path.glob("wandb/offline-run-*/files/media"))
    tables = list(media.rglob("*.table.json"))
    assert len(tables) == 1
    table = json.loads(tables[0].read_text())
    n_cells = len(json.loads((run_dir / "atlas" / "cells.json").read_text()))
    assert table["columns"][:3] == ["cell", "n_images", "activation"]
    assert table["columns"][-1] == "icon" and len(table["data"]) == n_cells
    assert list(media.rglob("atlas/atlas_*.png"))
