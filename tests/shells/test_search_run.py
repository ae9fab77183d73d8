"""The search runner: a search's +/- inversions are ``search.kind=invert`` of its final images,
run by the same engine with the same seed, on one process or under DDP."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from tolerances import TRAJECTORY, assert_reordered

from mti_lightning.core.config_schema import MTIConfig
from mti_lightning.core.io import load_tensors
from mti_lightning.face.api_config import compose_config
from mti_lightning.shells.search_run import run_stages

MTI = str(Path(sys.executable).parent / "mti")

TINY = [
    "model=resnet18",
    "model.input_size=[3,32,32]",
    "target=layer2.0.conv1:3@center",
    "search.attribution_layer=layer1.1.act2",
    "search.images_per_target=2",
    "search.draws=4",
    "search.steps=4",
    "search.inversions.steps=6",
    "search.inversions.draws=2",
    "search.inversions.lr=0.08",
    "search.inversions.power=3.0",
    "callbacks.snapshot_steps=[]",
    "callbacks.transparency=false",
    "checkpoint.every_n_steps=0",
    "logger=csv",
    "seed=5",
]


def _compose(overrides: list[str]) -> MTIConfig:
    return compose_config(overrides)


@pytest.mark.parametrize("fast_net", [True, False])
def test_search_inversions_equal_an_invert_search_of_its_images(tmp_path, fast_net):
    """The inversion stage after an MTI search and ``search=invert`` of the search's final
    images (with ``search.inversions``' steps, lr, draws and power, the same seed) are one
    computation: the same kind, built by the same code, fed the same draws. They run in one
    process on one CPU and agree bit for bit there; the tolerance (1e-6 on images in [0, 1])
    only leaves room for oneDNN picking other kernels for the separately built step
    networks on another CPU."""
    flags = [f"trainer.fast_net={str(fast_net).lower()}"]
    searched = run_stages(_compose([*TINY, *flags]), tmp_path / "mti", logger=False)
    inv = searched.inversions
    assert inv is not None and inv["plus"].shape == (2, 3, 32, 32)

    invert = _compose(
        [
            *TINY,
            *flags,
            "search=invert",
            "search.steps=6",
            "search.draws=2",
            "search.lr=0.08",
            "search.power=3.0",
            "search.images_per_target=1",
            "search.attribution_layer=layer1.1.act2",
        ]
    )
    invert.search.image = searched.images
    inverted = run_stages(invert, tmp_path / "invert", lm=searched.prepared.lm, logger=False)
    images, end = inverted.images, inverted.prepared.search.measured["end"]
    assert inverted.prepared.features == [
        f"layer2.0.conv1:3@center ({part})" for part in ("+", "+", "-", "-")
    ]
    # the same steps, batched as a stage of the search or as their own run
    assert_reordered(inv["plus"], images[:2], scale=1.0)
    assert_reordered(inv["minus"], images[2:], scale=1.0)
    assert_reordered(inv["plus_activation"], end["activation"][:2])
    assert_reordered(inv["minus_activation"], end["activation"][2:])
    # the stage made something: images moved off their noise start, the + image drives more
    assert not torch.equal(inv["plus"], inv["minus"])
    assert float(inv["plus_activation"].mean()) > float(inv["minus_activation"].mean())


def _mti(args: list[str], cwd) -> subprocess.CompletedProcess:
    env = dict(os.environ, WANDB_MODE="offline", PYTHONWARNINGS="ignore")
    return subprocess.run(
        [MTI, *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=600
    )


@pytest.mark.slow
def test_inversion_stage_under_ddp_matches_one_process(tmp_path):
    """Under DDP (two processes, gloo) the inversion stage runs on every process as a second
    fit of the same strategy: its draws split over the processes like the search's, so the
    inversions match one process's up to float summation order (``TRAJECTORY``, as the
    search's own images in ``tests/test_cli.py``)."""
    args = [*TINY, "search.steps=3", "search.inversions.steps=4"]
    one = _mti([*args, "hydra.run.dir=one"], tmp_path)
    assert one.returncode == 0, one.stderr[-3000:]
    two = _mti([*args, "hydra.run.dir=two", "trainer.devices=2", "trainer.strategy=ddp"], tmp_path)
    assert two.returncode == 0, two.stderr[-3000:]
    assert json.loads((tmp_path / "two" / "metrics.json").read_text())["world_size"] == 2
    a = load_tensors(tmp_path / "one" / "tensors.safetensors")
    b = load_tensors(tmp_path / "two" / "tensors.safetensors")
    for key in ("images", "plus", "minus"):
        assert a[key].shape == b[key].shape and not torch.equal(a["plus"], a["minus"])
        assert_reordered(b[key], a[key], tol=TRAJECTORY, scale=1.0, msg=key)
