"""Tests of CurveNet: structure, shipped weights (checksum, accuracy, recipe) and its training,
which is the common one (``mti experiment=train model=curvenet``)."""

from __future__ import annotations

import csv
import os
import subprocess
import sys
from pathlib import Path

import lightning as L
import pytest
import torch
import torch.nn.functional as F
import yaml
from safetensors.torch import load_file
from torch import nn

from mti_lightning.core.errors import MTIConfigError
from mti_lightning.core.zoo import build_builtin, curvenet
from mti_lightning.shells.trainer import make_trainer
from mti_lightning.world.curve_datamodule import CurveDataModule
from mti_lightning.world.curve_dataset import CurveDataset
from mti_lightning.world.recipes import recipe_for
from mti_lightning.world.train import (
    ClassifierModule,
    evaluate_accuracy,
    resolve_recipe,
    sha256_file,
)

RECORD_PATH = curvenet.WEIGHTS_PATH.with_suffix(".yaml")
MTI = str(Path(sys.executable).parent / "mti")
TINY = ["train.train_size=64", "train.val_size=32", "train.test_size=32", "train.epochs=1"]


def module(model: nn.Module, lr: float = 0.008) -> ClassifierModule:
    return ClassifierModule(model, curvenet.MEAN, curvenet.STD, curvenet.NUM_CLASSES, lr=lr)


def run_mti(args: list[str], cwd: Path) -> subprocess.CompletedProcess:
    env = dict(os.environ, WANDB_MODE="offline", PYTHONWARNINGS="ignore")
    return subprocess.run(
        [MTI, *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=600
    )


def test_structure_and_config() -> None:
    model, config = curvenet.build(pretrained=False)
    names = dict(model.named_modules())
    for name in ("conv1", "bn1", "act1", "pool1", "conv2", "bn2", "act2", "pool2", "conv3"):
        assert name in names
    assert all(not m.inplace for m in model.modules() if isinstance(m, nn.ReLU))
    assert config == {
        "input_size": (3, 64, 64),
        "mean": curvenet.MEAN,
        "std": curvenet.STD,
        "trained": False,
        "attribution_layer": "pool1",
    }
    assert model(torch.zeros(2, 3, 64, 64)).shape == (2, 8)
    assert not model.training


def test_shipped_weights_match_their_record_and_recipe() -> None:
    """The record beside the weights holds their sha256 and the recipe that made them, which
    is the recipe ``mti experiment=train model=curvenet`` trains with."""
    model, config = build_builtin("curvenet")
    assert config["trained"] is True
    assert curvenet.WEIGHTS_PATH.stat().st_size < 5_000_000
    record = yaml.safe_load(RECORD_PATH.read_text())
    assert sha256_file(curvenet.WEIGHTS_PATH) == record["result"]["sha256"]
    assert record["result"]["held_out_accuracy"] >= 0.95
    shipped = record["recipe"]
    assert tuple(shipped["mean"]) == curvenet.MEAN and tuple(shipped["std"]) == curvenet.STD
    recipe = resolve_recipe(recipe_for("curvenet"))
    assert recipe["model"] == "curvenet" and recipe["warmup"] == 0.3
    for key, value in shipped.items():
        if key not in ("mean", "std"):
            assert recipe[key] == value, key
    assert recipe["train_size"] == 40960 and recipe["epochs"] == 8


def test_shipped_weights_accuracy_on_fresh_images() -> None:
    model, _ = curvenet.build()
    recipe = recipe_for("curvenet")
    fresh_seed = 424242
    assert fresh_seed not in (recipe["train_seed"], recipe["val_seed"], recipe["test_seed"])
    assert evaluate_accuracy(module(model), CurveDataset(512, fresh_seed)) >= 0.95


def test_missing_weights_error_names_path_and_command(monkeypatch, tmp_path) -> None:
    missing = tmp_path / "curvenet.safetensors"
    monkeypatch.setattr(curvenet, "WEIGHTS_PATH", missing)
    with pytest.raises(FileNotFoundError, match="mti experiment=train model=curvenet") as err:
        curvenet.build()
    assert str(missing) in str(err.value)


def test_recipe_validation() -> None:
    with pytest.raises(MTIConfigError, match="unknown recipe keys"):
        resolve_recipe(recipe_for("curvenet", {"epoch": 3}))
    with pytest.raises(MTIConfigError, match="must all differ"):
        resolve_recipe(recipe_for("curvenet", {"val_seed": recipe_for("curvenet")["train_seed"]}))
    with pytest.raises(MTIConfigError, match="unknown CurveConfig keys"):
        resolve_recipe(recipe_for("curvenet", {"config": {"colour": 1}}))


def test_the_removed_training_command_names_its_replacement(tmp_path) -> None:
    out = run_mti(["experiment=train_curvenet", "hydra.run.dir=run"], tmp_path)
    assert out.returncode == 2
    line = out.stderr.strip().splitlines()[-1]
    assert line == (
        "mti: error: experiment=train_curvenet is gone; use mti experiment=train "
        "model=curvenet (the shipped weights' recipe)"
    )
    assert not (tmp_path / "run" / "curvenet.safetensors").exists()


@pytest.mark.slow
def test_training_steps_reduce_the_loss(tmp_path) -> None:
    L.seed_everything(0)
    data = CurveDataModule(train_size=256, val_size=32, batch_size=32)
    data.setup("fit")
    images, labels = next(iter(torch.utils.data.DataLoader(data.train_set, batch_size=256)))
    classifier = module(curvenet.CurveNet(), lr=0.01)

    def loss() -> float:
        classifier.eval()
        with torch.no_grad():
            value = float(F.cross_entropy(classifier(images), labels))
        classifier.train()
        return value

    before = loss()
    trainer = make_trainer(tmp_path, 40, requeue_signal=None, max_epochs=-1, limit_val_batches=0)
    trainer.fit(classifier, datamodule=data)
    assert loss() < before - 0.1


@pytest.mark.slow
def test_mti_train_model_curvenet_writes_weights_record_and_csv_logs(tmp_path) -> None:
    """The one CurveNet training path: the shipped recipe (overridden small here) through
    ``mti experiment=train model=curvenet``; weights, their record with checksum, CSV logs."""
    args = ["experiment=train", "model=curvenet", *TINY, "train.num_workers=0", "logger=csv"]
    out = run_mti([*args, "hydra.run.dir=run"], tmp_path)
    assert out.returncode == 0, out.stderr[-3000:]
    weights = tmp_path / "run" / "model.safetensors"
    record = yaml.safe_load(weights.with_suffix(".yaml").read_text())
    assert record["result"]["sha256"] == sha256_file(weights)
    assert 0.0 <= record["result"]["held_out_accuracy"] <= 1.0
    assert record["recipe"]["train_size"] == 64 and record["recipe"]["lr"] == 0.008
    curvenet.CurveNet().load_state_dict(load_file(weights))
    (metrics,) = (tmp_path / "run").rglob("metrics.csv")
    with open(metrics) as f:
        columns = next(csv.reader(f))
    assert {"train/loss_epoch", "val/loss", "val/acc", "test/acc"} <= set(columns)
