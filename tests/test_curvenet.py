"""Tests of CurveNet: structure, shipped weights (checksum, accuracy) and its training code."""

from __future__ import annotations

import csv

import lightning as L
import pytest
import torch
import torch.nn.functional as F
import yaml
from safetensors.torch import load_file
from torch import nn

from mti_lightning.core.zoo import build_builtin, curvenet
from mti_lightning.world.curve_datamodule import CurveDataModule
from mti_lightning.world.curve_dataset import CurveDataset
from mti_lightning.world.train import sha256_file
from mti_lightning.world.train_curvenet import (
    DEFAULT_RECIPE,
    CurveNetModule,
    evaluate_accuracy,
    load_recipe,
    main,
    normalize,
    resolve_recipe,
    train_curvenet,
)

RECIPE_PATH = curvenet.WEIGHTS_PATH.with_suffix(".yaml")
TINY_RECIPE = {"train_size": 64, "val_size": 32, "test_size": 32, "epochs": 1, "num_workers": 0}


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


def test_shipped_weights_load_and_match_recipe_checksum() -> None:
    model, config = build_builtin("curvenet")
    assert config["trained"] is True
    assert curvenet.WEIGHTS_PATH.stat().st_size < 5_000_000
    record = yaml.safe_load(RECIPE_PATH.read_text())
    assert sha256_file(curvenet.WEIGHTS_PATH) == record["result"]["sha256"]
    assert record["result"]["held_out_accuracy"] >= 0.95
    assert resolve_recipe(load_recipe(RECIPE_PATH)) == resolve_recipe(DEFAULT_RECIPE)


def test_shipped_weights_accuracy_on_fresh_images() -> None:
    model, _ = curvenet.build()
    recipe = load_recipe(RECIPE_PATH)
    fresh_seed = 424242
    assert fresh_seed not in (recipe["train_seed"], recipe["val_seed"], recipe["test_seed"])
    assert evaluate_accuracy(model, CurveDataset(512, fresh_seed)) >= 0.95


def test_missing_weights_error_names_path_and_command(monkeypatch, tmp_path) -> None:
    missing = tmp_path / "curvenet.safetensors"
    monkeypatch.setattr(curvenet, "WEIGHTS_PATH", missing)
    with pytest.raises(FileNotFoundError, match="train_curvenet") as err:
        curvenet.build()
    assert str(missing) in str(err.value)


def test_recipe_validation() -> None:
    with pytest.raises(ValueError, match="unknown recipe keys"):
        resolve_recipe({"epoch": 3})
    with pytest.raises(ValueError, match="normalisation"):
        resolve_recipe({"mean": [0.4, 0.4, 0.4]})
    with pytest.raises(ValueError, match="must all differ"):
        resolve_recipe({"val_seed": DEFAULT_RECIPE["train_seed"]})
    with pytest.raises(ValueError, match="unknown CurveConfig keys"):
        resolve_recipe({"config": {"colour": 1}})


@pytest.mark.slow
def test_training_steps_reduce_the_loss() -> None:
    L.seed_everything(0)
    data = CurveDataModule(train_size=256, val_size=32, batch_size=32)
    data.setup("fit")
    images, labels = next(iter(torch.utils.data.DataLoader(data.train_set, batch_size=256)))
    module = CurveNetModule(lr=0.01)

    def loss() -> float:
        module.eval()
        with torch.no_grad():
            value = float(F.cross_entropy(module(images), labels))
        module.train()
        return value

    before = loss()
    trainer = L.Trainer(
        max_steps=40,
        accelerator="cpu",
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        num_sanity_val_steps=0,
        limit_val_batches=0,
    )
    trainer.fit(module, datamodule=data)
    assert loss() < before - 0.1


@pytest.mark.slow
def test_train_curvenet_writes_weights_and_csv_logs(tmp_path) -> None:
    out = tmp_path / "w.safetensors"
    results = train_curvenet(TINY_RECIPE, out, logger="csv", log_dir=tmp_path / "logs")
    assert results["sha256"] == sha256_file(out) and 0.0 <= results["held_out_accuracy"] <= 1.0
    model = curvenet.CurveNet()
    model.load_state_dict(load_file(out))
    (metrics,) = (tmp_path / "logs").rglob("metrics.csv")
    with open(metrics) as f:
        columns = next(csv.reader(f))
    assert {"train/loss_epoch", "train/acc_epoch", "val/loss", "val/acc", "test/acc"} <= set(
        columns
    )
    with pytest.raises(ValueError, match="logger"):
        train_curvenet(TINY_RECIPE, out, logger="tensorboard")


@pytest.mark.slow
def test_cli_writes_weights_and_recipe_record(tmp_path) -> None:
    recipe_file = tmp_path / "recipe.yaml"
    recipe_file.write_text(yaml.safe_dump({"recipe": TINY_RECIPE}))
    out = tmp_path / "cli.safetensors"
    main(["--out", str(out), "--recipe", str(recipe_file), "--logger", "none"])
    record = yaml.safe_load(out.with_suffix(".yaml").read_text())
    assert record["result"]["sha256"] == sha256_file(out)
    assert record["recipe"]["train_size"] == TINY_RECIPE["train_size"]


def test_normalize() -> None:
    x = torch.full((1, 3, 2, 2), 0.75)
    assert torch.allclose(normalize(x), torch.ones_like(x))
