"""Fixtures of the atlas tests: a small image folder, a tiny config and one full atlas run.

The model is timm's random-init ``test_resnet`` at 32x32 input (no download), the feature a
``layer2.0.bn1`` unit with attribution at ``layer1`` (an 8x8 map): every stage runs in
seconds on two CPU cores.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

from mti_lightning.journeys.atlas import AtlasConfig, run_atlas

N_IMAGES = 80
MTI = str(Path(sys.executable).parent / "mti")


def write_folder(root: Path, n: int = N_IMAGES, size: int = 32, seed: int = 0) -> Path:
    """``n`` PNGs of oriented stripes (random angle, phase, colour, noise) in two classes."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:size, 0:size] / size
    for i in range(n):
        angle, phase, freq = rng.uniform(0, np.pi), rng.uniform(0, 2 * np.pi), rng.uniform(2, 6)
        wave = np.sin(2 * np.pi * freq * (np.cos(angle) * xx + np.sin(angle) * yy) + phase)
        colour = rng.uniform(0.2, 1.0, 3)
        img = 0.5 + 0.4 * wave[..., None] * colour + 0.05 * rng.standard_normal((size, size, 3))
        folder = root / ("steep" if np.sin(angle) > 0.7 else "flat")
        folder.mkdir(parents=True, exist_ok=True)
        pixels = (np.clip(img, 0, 1) * 255).astype(np.uint8)
        Image.fromarray(pixels).save(folder / f"{i:04d}.png")
    return root


def tiny_config(data: Path, **overrides: Any) -> AtlasConfig:
    """An atlas config that runs every stage in seconds on the test folder."""
    options: dict[str, Any] = {
        "data": str(data),
        "model": "test_resnet",
        "input_size": 32,
        "feature": "layer2.0.bn1:1@center",
        "layers": ["layer1", "layer2.0.conv1"],
        "shard_size": 16,
        "batch_size": 8,
        "top_activation": 12,
        "bottom_activation": 12,
        "top_l1": 10,
        "top_e_minus": 10,
        "umap_n_neighbors": 6,
        "umap_n_epochs": 60,
        "grid": 5,
        "min_images": 2,
        "icon_steps": 6,
        "icon_draws": 2,
        "icon_canvas": 0,
        "atlas_size": 200,
        "viewer_thumbnails": 4,
        "thumbnail_size": 24,
    }
    options.update(overrides)
    return AtlasConfig(**options)


@pytest.fixture(scope="session")
def image_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_folder(tmp_path_factory.mktemp("images"))


@pytest.fixture(scope="session")
def atlas_run(tmp_path_factory: pytest.TempPathFactory, image_folder: Path) -> tuple[Path, dict]:
    """One full atlas run (split icons on) shared by the tests that only read its outputs."""
    run_dir = tmp_path_factory.mktemp("atlas_run")
    cfg = tiny_config(image_folder, split_icons=True)
    return run_dir, run_atlas(cfg, run_dir)


@pytest.fixture(scope="session")
def curve_atlas(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny atlas of CurveNet's ``bn2:19@center`` (the search's default model and layer) over
    300 curve images: a few icon steps on an 8x8 grid, for placing search images on it."""
    run_dir = tmp_path_factory.mktemp("curve_atlas")
    cfg = AtlasConfig(
        curves_n=300,
        shard_size=150,
        batch_size=150,
        top_activation=60,
        bottom_activation=60,
        top_l1=60,
        top_e_minus=60,
        umap_n_neighbors=10,
        umap_n_epochs=100,
        grid=8,
        min_images=2,
        icon_steps=4,
        icon_draws=1,
        icon_canvas=0,
        atlas_size=320,
        viewer_thumbnails=4,
        thumbnail_size=24,
    )
    run_atlas(cfg, run_dir)
    return run_dir


def run_mti(args: list[str], cwd: Path) -> subprocess.CompletedProcess:
    """The installed ``mti`` command, W&B offline."""
    env = dict(os.environ, WANDB_MODE="offline", PYTHONWARNINGS="ignore")
    env.pop("WANDB_API_KEY", None)
    return subprocess.run(
        [MTI, *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=600
    )


def placed_search_args(atlas: Path) -> list[str]:
    """A short MTI search of the curve atlas's feature, placed on it every 2 steps."""
    return [
        "target=bn2:19@center",
        f"callbacks.atlas={atlas}",
        "callbacks.atlas_every=2",
        "search.steps=5",
        "search.draws=4",
        "search.inversions.steps=2",
        "logger=csv",
    ]


@pytest.fixture(scope="session")
def placed_search(curve_atlas: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The run directory of one such search (one process)."""
    cwd = tmp_path_factory.mktemp("placed")
    out = run_mti([*placed_search_args(curve_atlas), "hydra.run.dir=one"], cwd)
    assert out.returncode == 0, out.stderr[-3000:]
    return cwd / "one"
