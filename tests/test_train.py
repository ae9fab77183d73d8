"""Training any network on the curves world (``mti experiment=train``): its checks, its weights
and record, and that the trained checkpoint loads into an attribution and a search."""

from __future__ import annotations

import csv
import os
import re
import subprocess
import sys
from pathlib import Path

import lightning as L
import pytest
import torch
import torch.nn.functional as F
import yaml
from safetensors.torch import save_file

from mti_lightning.core.attribution import attribute
from mti_lightning.core.config_schema import MTIConfig
from mti_lightning.core.errors import MTIConfigError
from mti_lightning.core.features import FeatureSpec, build_readout
from mti_lightning.core.models import load_model
from mti_lightning.face.api_config import compose_config
from mti_lightning.world.curve_dataset import CurveDataset
from mti_lightning.world.networks import build_network
from mti_lightning.world.recipes import RECIPES, recipe_for
from mti_lightning.world.train import prepare_training, recipe_hash, resolve_recipe
from mti_lightning.world.train_cache import cached_record, entry_dir

MTI = str(Path(sys.executable).parent / "mti")
TINY = {
    "train_size": 256,
    "val_size": 32,
    "test_size": 64,
    "epochs": 1,
    "batch_size": 32,
    "lr": 0.01,
    "warmup": 0.1,
    "num_workers": 0,
}
TINY_ARGS = [f"train.{k}={v}" for k, v in TINY.items()]


def _env() -> dict[str, str]:
    env = dict(os.environ, WANDB_MODE="offline", PYTHONWARNINGS="ignore", HF_HUB_OFFLINE="1")
    env.pop("WANDB_API_KEY", None)
    return env


def _compose(overrides: list[str]) -> MTIConfig:
    return compose_config(overrides)


BAD = [
    ({"model": "resnet_nope"}, "unknown model 'resnet_nope'"),
    ({"model": "torchvision:resnet_nope"}, "unknown torchvision model 'torchvision:resnet_nope'"),
    ({"data": "/no/such/folder"}, "train.data=/no/such/folder is not a directory"),
    ({"max_steps": 0}, "train.max_steps=0; need at least 1"),
    ({"epochs": 0}, "train.epochs=0; need a positive integer"),
    ({"lr": -1.0}, "train.lr=-1.0 out of range"),
    ({"epoch": 3}, "unknown recipe keys ['epoch']"),
    ({"image_size": 32}, "train.image_size=32 but curve images are 64 px"),
    ({"kwargs": {"no_such_arg": 1}}, "model test_resnet: bad constructor arguments"),
]


@pytest.mark.parametrize("override,message", BAD, ids=[b[1][:24] for b in BAD])
def test_bad_training_input_is_a_clear_error_before_any_work(override, message):
    with pytest.raises(MTIConfigError, match=re.escape(message)):
        prepare_training({**TINY, "model": "test_resnet", **override})


def test_an_image_folder_without_classes_is_a_clear_error(tmp_path):
    (tmp_path / "only").mkdir()
    with pytest.raises(MTIConfigError, match="needs at least two class folders"):
        prepare_training({**TINY, "model": "test_resnet", "data": str(tmp_path)})


def test_a_checkpoint_that_does_not_match_the_model_is_a_clear_error(tmp_path):
    other = tmp_path / "curvenet_like.safetensors"
    save_file(build_network("curvenet", 8, 64).model.state_dict(), str(other))
    with pytest.raises(MTIConfigError, match="does not match the model"):
        load_model("test_resnet", checkpoint=other)
    record = {"model": {"name": "test_vit", "kwargs": {}, "input_size": [3, 64, 64]}}
    other.with_suffix(".yaml").write_text(yaml.safe_dump(record))
    with pytest.raises(MTIConfigError, match="was trained for model 'test_vit'"):
        load_model("test_resnet", checkpoint=other)


def test_vits_get_the_worlds_image_size_and_recipes_hash_what_they_train():
    small = {"depth": 1, "embed_dim": 32, "num_heads": 2}  # a ViT that fixes its input size
    net = build_network("vit_tiny_patch16_224", 8, 64, small)
    assert net.kwargs == {"num_classes": 8, **small, "img_size": 64}
    assert net.input_size == (3, 64, 64)
    assert net.model(torch.zeros(2, 3, 64, 64)).shape == (2, 8)
    base = recipe_for("test_resnet", TINY)
    assert recipe_hash(base) == recipe_hash({**base, "num_workers": 2, "num_threads": 1})
    assert recipe_hash(base) != recipe_hash({**base, "lr": 0.02})
    assert resolve_recipe(base)["max_steps"] is None


@pytest.mark.slow
def test_cli_trains_a_tiny_timm_model_that_loads_into_attribution_and_search(tmp_path):
    """`mti experiment=train` a few steps: the loss falls, the weights come with their record,
    and `model.checkpoint=` loads them into an attribution and an MTI search at 64x64."""
    run = tmp_path / "run"
    args = ["experiment=train", "model.name=test_resnet", "logger=csv", f"hydra.run.dir={run}"]
    out = subprocess.run(
        [MTI, *args, *TINY_ARGS, "train.max_steps=8"],
        cwd=tmp_path,
        env=_env(),
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert out.returncode == 0, out.stderr[-3000:]
    weights = run / "model.safetensors"
    record = yaml.safe_load(weights.with_suffix(".yaml").read_text())
    assert record["model"]["kwargs"] == {"num_classes": 8}
    assert record["recipe"]["model"] == "test_resnet" and record["recipe"]["seed"] == 0
    result = record["result"]
    assert result["steps"] == 8 and result["train_seconds"] > 0
    assert 0 <= result["held_out_accuracy"] <= 1 and len(result["load_average"]) == 3
    with open(run / "csv" / "metrics.csv") as f:
        assert {"train/loss_step", "test/acc"} <= set(next(csv.reader(f)))
    assert (run / "checkpoints" / "last.ckpt").is_file()

    data = CurveDataset(64, 1000)  # training images of the recipe's train_seed
    images = torch.stack([data[i][0] for i in range(64)])
    labels = torch.tensor([data[i][1] for i in range(64)])
    L.seed_everything(0)  # the recipe's seed: the same initial weights as the training's
    initial = build_network("test_resnet", 8, 64).model
    trained = load_model("test_resnet", checkpoint=weights)
    assert trained.input_size == (3, 64, 64) and trained.trained

    def loss(model: torch.nn.Module) -> float:
        model.train()  # batch statistics: what the optimiser saw
        with torch.no_grad():
            value = float(F.cross_entropy(model(trained.normalize(images)), labels))
        model.eval()
        return value

    assert loss(trained.model) < loss(initial) - 0.05

    readout = build_readout(trained.model, trained.input_size, [FeatureSpec("layer2.0.act2:in", 3)])
    att = attribute(trained, images[:1], readout, ["layer2.0:in"])
    assert torch.isfinite(att.activation).all()

    from mti_lightning.journeys.search.job import run_search_job

    cfg = _compose(
        [
            "experiment=mti_depth",
            "model.name=test_resnet",
            f"model.checkpoint={weights}",
            "search.steps=2",
            "search.draws=2",
            "search.inversions.enabled=false",
            "callbacks.transparency=false",
            "callbacks.snapshot_steps=[]",
            "logger=csv",
        ]
    )
    searched = run_search_job(cfg, tmp_path / "search")
    assert searched["steps_run"] == 2 and len(searched["images"]) == 4


@pytest.mark.slow
def test_cli_bad_training_input_is_one_line(tmp_path):
    out = subprocess.run(
        [MTI, "experiment=train", "model.name=resnet_nope", "logger=csv", "hydra.run.dir=r"],
        cwd=tmp_path,
        env=_env(),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert out.returncode == 2
    (line,) = out.stderr.strip().splitlines()
    assert line.startswith("mti: error: unknown model 'resnet_nope'")


def test_cache_entries_are_keyed_by_recipe(tmp_path):
    recipe = recipe_for("test_resnet", TINY)
    where = entry_dir(recipe, tmp_path)
    assert where.parent == tmp_path and where.name == f"test_resnet-{recipe_hash(recipe)}"
    assert cached_record(recipe, tmp_path) is None


def test_curvenets_recipe_is_the_one_of_its_shipped_weights():
    from mti_lightning.core.zoo.curvenet import WEIGHTS_PATH

    recipe = resolve_recipe(recipe_for("curvenet"))
    shipped = yaml.safe_load(WEIGHTS_PATH.with_suffix(".yaml").read_text())["recipe"]
    assert all(recipe[k] == v for k, v in shipped.items() if k not in ("mean", "std"))
    assert recipe["train_size"] == 40960 and recipe["epochs"] == 8


def test_every_measured_recipe_is_valid_and_the_comparison_has_one_per_timm_model():
    """The recipes ship as measured: each resolves, and every timm model the comparison trains
    by default has its own (none falls back to the one-epoch default)."""
    for name in RECIPES:
        assert resolve_recipe(recipe_for(name))["model"] == name
    models = _compose(["experiment=compare"]).models
    assert models[0] == "curvenet" and len(models) >= 4
    assert all(name in RECIPES for name in models[1:])


def test_the_api_trains_through_the_commands_code_path(tmp_path):
    """`mti.train` runs what `mti experiment=train` runs: the same resolved recipe, weights
    with their record, loadable by name and checkpoint; a model object is a clear error."""
    import mti_lightning as mti

    record = mti.train("test_resnet", run_dir=tmp_path, logger="csv", max_steps=2, **TINY)
    assert record["recipe"] == resolve_recipe(recipe_for("test_resnet", {**TINY, "max_steps": 2}))
    assert record["result"]["steps"] == 2
    assert (tmp_path / "config.yaml").is_file()
    loaded = mti.load_model("test_resnet", checkpoint=record["weights"])
    assert loaded.input_size == (3, 64, 64) and loaded.trained
    with pytest.raises(MTIConfigError, match="train takes a model name"):
        mti.train(torch.nn.Linear(2, 2), run_dir=tmp_path / "x")


def test_training_from_weights_is_a_clear_error_before_any_work(tmp_path):
    from mti_lightning.world.train_job import run_training

    cfg = _compose(["experiment=train", "model.name=test_resnet", "model.pretrained=true"])
    with pytest.raises(MTIConfigError, match="experiment=train trains from random init"):
        run_training(cfg, tmp_path)
    assert not any(tmp_path.iterdir())
