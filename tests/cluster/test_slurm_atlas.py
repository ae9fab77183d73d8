"""The atlas dataset pass as one SLURM job of two tasks (DDP): the same shards as one process."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from slurm_cluster import Cluster
from test_slurm_sweeps import SLURM, mti
from tolerances import assert_reordered

from mti_lightning.core.io import load_tensors

pytestmark = pytest.mark.slow

N_IMAGES = 48


def write_images(root: Path) -> Path:
    """``N_IMAGES`` small random-noise PNGs in two class folders."""
    rng = np.random.default_rng(0)
    for i in range(N_IMAGES):
        folder = root / ("a" if i % 2 else "b")
        folder.mkdir(parents=True, exist_ok=True)
        pixels = rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)
        Image.fromarray(pixels).save(folder / f"{i:03d}.png")
    return root


def atlas_pass(data: Path) -> list[str]:
    """A tiny dataset pass: random-init test_resnet at 32x32, six shards of eight images."""
    return [
        "experiment=atlas",
        "stage=dataset_pass",
        f"atlas.data={data}",
        "model.name=test_resnet",
        "model.input_size=[3,32,32]",
        "target=layer2.0.bn1:1@center",
        "atlas.layers=[layer1,layer2.0.conv1]",
        "atlas.shard_size=8",
        "atlas.batch_size=8",
        "logger=csv",
    ]


def shards(run: Path) -> dict[str, dict[str, torch.Tensor]]:
    files = sorted(run.glob("dataset_pass/shards-*/shard_*.safetensors"))
    return {p.name: load_tensors(p) for p in files}


def test_e_the_atlas_pass_as_two_slurm_tasks_writes_one_process_shards(
    cluster: Cluster, tmp_path: Path
):
    args = atlas_pass(write_images(tmp_path / "images"))
    ddp = mti(
        [
            "-m",
            *SLURM,
            *args,
            "hydra.launcher.tasks_per_node=2",
            "atlas.devices=2",
            "atlas.strategy=ddp",
            "hydra.sweep.dir=sweep",
        ],
        cwd=tmp_path,
        env=cluster.env,
    )
    assert ddp.returncode == 0, ddp.stderr[-3000:]
    assert len(list((tmp_path / "sweep" / ".submitit").glob("*/*_log.out"))) == 2  # two tasks
    one = mti([*args, "hydra.run.dir=one"], cwd=tmp_path, env=cluster.env)
    assert one.returncode == 0, one.stderr[-3000:]
    two_tasks, one_process = shards(tmp_path / "sweep" / "0"), shards(tmp_path / "one")
    assert len(one_process) == N_IMAGES // 8 and two_tasks.keys() == one_process.keys()
    result = json.loads((tmp_path / "sweep" / "0" / "dataset_pass" / "result.json").read_text())
    assert result["n_images"] == N_IMAGES and result["computed_shards"] == N_IMAGES // 8
    for name, expected in one_process.items():
        got = two_tasks[name]
        assert got.keys() == expected.keys(), name
        for key in expected:
            assert_reordered(got[key], expected[key], msg=f"{name} {key}")
