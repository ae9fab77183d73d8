"""Every stage on a small data set, and the runner: skip on resume, re-run on a changed
config, ``stage=`` for one stage, clear errors for unknown or unready stages."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import N_IMAGES, tiny_config
from PIL import Image
from tolerances import NETWORK, assert_reordered

from mti_lightning.core.errors import MTIConfigError
from mti_lightning.core.io import load_tensors
from mti_lightning.journeys.atlas import STAGES, run_atlas
from mti_lightning.journeys.atlas.dataset_pass import load_pass


def test_every_stage_ran_and_wrote_its_result(atlas_run: tuple[Path, dict]) -> None:
    run_dir, results = atlas_run
    assert list(results) == list(STAGES)
    for name, res in results.items():
        assert res["skipped"] is False
        assert json.loads((run_dir / name / "result.json").read_text())["fingerprint"]
    assert json.loads((run_dir / "atlas_config.json").read_text())["grid"] == 5


def test_dataset_pass_reduces_every_image(atlas_run: tuple[Path, dict]) -> None:
    run_dir, results = atlas_run
    res = results["dataset_pass"]
    assert res["n_images"] == N_IMAGES and res["n_failed"] == 0
    assert res["n_shards"] == res["computed_shards"] == N_IMAGES // 16
    assert res["images_per_s"] > 0
    r = load_pass(run_dir / res["shards"])
    assert r["index"].tolist() == list(range(N_IMAGES))
    h0, h1, w0, w1 = res["window"]
    channels = r["layer1/vector"].shape[1]
    assert r["layer1/map"].shape == (N_IMAGES, channels, h1 - h0, w1 - w0)
    assert (h1 - h0, w1 - w0) == (3, 3)  # a 3x3 conv (stride 2) of layer1 feeds the unit
    e = r["layer1/map"].flatten(1)
    terms = float(e.abs().sum(1).max())  # the pass's sums and these, in other orders
    assert_reordered(r["layer1/vector"], r["layer1/map"].sum((2, 3)), scale=terms)
    assert_reordered(r["layer1/e_plus"], e.clamp_min(0).sum(1), scale=terms)
    assert_reordered(r["layer1/e_minus"], (-e).clamp_min(0).sum(1), scale=terms)
    for key in ("e_plus", "e_minus", "e_plus_l2", "e_minus_l2", "vector"):
        assert f"layer2.0.conv1/{key}" in r
    # layer2.0.conv1 -> bn1 is affine, so the attribution there sums to the activation
    # minus BN's offset: the same for every image
    offset = r["activation"] - r["layer2.0.conv1/vector"].sum(1)
    terms = float(r["layer2.0.conv1/vector"].abs().sum(1).max())
    assert_reordered(offset, offset[0].expand_as(offset), tol=NETWORK, scale=terms)


def test_selection_scatter_and_embedding(atlas_run: tuple[Path, dict]) -> None:
    run_dir, results = atlas_run
    sel = load_tensors(run_dir / "selection" / "selection.safetensors")
    n = results["selection"]["n_selected"]
    assert sel["rows"].numel() == n and 12 <= n <= 44
    assert results["selection"]["criteria"] == {
        "top_activation": 12,
        "bottom_activation": 12,
        "top_l1": 10,
        "top_e_minus": 10,
    }
    act = load_pass(run_dir / results["dataset_pass"]["shards"])["activation"]
    top = set(torch.topk(act, 12).indices.tolist())
    assert top == set(sel["rows"][sel["top_activation"]].tolist())
    with Image.open(run_dir / results["scatter"]["figure"]) as img:
        assert img.width > 300
    layout = load_tensors(run_dir / "embedding" / "layout.safetensors")
    assert torch.equal(layout["rows"], sel["rows"])
    assert layout["layout"].shape == (n, 2)
    assert layout["layout"].min() == 0 and layout["layout"].max() == 1
    assert (run_dir / results["embedding"]["figure"]).is_file()


def test_icons_one_per_occupied_cell(atlas_run: tuple[Path, dict]) -> None:
    run_dir, results = atlas_run
    t = load_tensors(run_dir / "icons" / "icons.safetensors")
    k = results["icons"]["n_icons"]
    assert k == t["cells"].numel() >= 2
    assert (t["counts"] >= 2).all()
    point_cells = t["point_cells"].numpy()
    for cell, count in zip(t["cells"].tolist(), t["counts"].tolist()):
        assert (point_cells == cell).sum() == count
    assert results["icons"]["n_rendered"] == 3 * k  # split icons: + and - parts too
    assert t["images"].shape == (3 * k, 3, 32, 32) and t["alpha"].shape == (3 * k, 32, 32)
    assert t["activation"].shape == (3 * k,) and torch.isfinite(t["activation"]).all()
    h0, h1, w0, w1 = t["crop"].tolist()
    assert 0 <= h0 < h1 <= 32 and 0 <= w0 < w1 <= 32 and (h1 - h0) < 32
    assert len(list((run_dir / "icons" / "png").glob("cell_*.png"))) == k


def test_atlas_image_and_table(atlas_run: tuple[Path, dict]) -> None:
    run_dir, results = atlas_run
    with Image.open(run_dir / results["atlas"]["atlas"]) as img:
        board = np.asarray(img.convert("RGB"))
    assert board.shape == (200, 200, 3)
    cells = json.loads((run_dir / "atlas" / "cells.json").read_text())
    t = load_tensors(run_dir / "icons" / "icons.safetensors")
    assert len(cells) == t["cells"].numel()
    for rec in cells:
        row, col = rec["cell"]
        corner = board[row * 40, col * 40].astype(int)
        if rec["activation"] > 0:
            assert corner[0] >= corner[2]
        else:
            assert corner[2] >= corner[0]
    assert (run_dir / "atlas" / "atlas.html").is_file()


def test_resume_skips_every_stage(atlas_run: tuple[Path, dict], image_folder: Path) -> None:
    run_dir, first = atlas_run
    again = run_atlas(tiny_config(image_folder, split_icons=True), run_dir)
    assert all(res["skipped"] for res in again.values())
    assert {k: v["fingerprint"] for k, v in again.items()} == {
        k: v["fingerprint"] for k, v in first.items()
    }


def test_changed_option_reruns_its_stage_and_those_below(
    atlas_run: tuple[Path, dict], image_folder: Path, tmp_path: Path
) -> None:
    run_dir = tmp_path / "run"
    shutil.copytree(atlas_run[0], run_dir)
    cfg = tiny_config(image_folder, split_icons=True, atlas_size=150)
    res = run_atlas(cfg, run_dir)
    skipped = {k for k, v in res.items() if v["skipped"]}
    assert skipped == {"dataset_pass", "selection", "scatter", "embedding", "icons"}
    with Image.open(run_dir / "atlas" / "atlas.png") as img:
        assert img.size == (150, 150)


def test_stage_option_runs_one_stage(
    atlas_run: tuple[Path, dict], image_folder: Path, tmp_path: Path
) -> None:
    run_dir = tmp_path / "run"
    shutil.copytree(atlas_run[0], run_dir)
    before = (run_dir / "scatter" / "tension_scatter.png").stat().st_mtime_ns
    res = run_atlas(tiny_config(image_folder, split_icons=True), run_dir, stage="scatter")
    assert list(res) == ["scatter"] and res["scatter"]["skipped"] is False
    assert (run_dir / "scatter" / "tension_scatter.png").stat().st_mtime_ns != before
    stale = tiny_config(image_folder, split_icons=True, umap_min_dist=0.5)
    with pytest.raises(MTIConfigError, match=r"stage icons reads.*embedding"):
        run_atlas(stale, run_dir, stage="icons")
    with pytest.raises(MTIConfigError, match="unknown stage 'icon'.*dataset_pass"):
        run_atlas(stale, run_dir, stage="icon")
