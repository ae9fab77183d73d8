"""Train CurveNet on synthetic curve images and write its weights (the shipped ones included).

``python -m mti_lightning.world.train_curvenet --out PATH [--recipe YAML]`` trains per the recipe
(default: the one that made the shipped weights) through the common training path
(:mod:`mti_lightning.world.train`, as ``mti experiment=train model.name=curvenet``), writes the
weights to PATH as safetensors and the recipe with its measured results to PATH with a
``.yaml`` suffix.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

import torch
import yaml
from lightning.pytorch.loggers import CSVLogger, Logger, WandbLogger
from torch import nn
from torch.utils.data import Dataset

from mti_lightning.core.zoo.curvenet import MEAN, NUM_CLASSES, STD, WEIGHTS_PATH, CurveNet
from mti_lightning.world import train
from mti_lightning.world.curves import CurveConfig
from mti_lightning.world.train import ClassifierModule

SHIPPED_RECIPE = WEIGHTS_PATH.with_suffix(".yaml")

DEFAULT_RECIPE: dict[str, Any] = {
    "seed": 0,
    "train_seed": 1000,
    "val_seed": 2000,
    "test_seed": 3000,
    "train_size": 40960,
    "val_size": 2048,
    "test_size": 4096,
    # A two-arc image labelled by one of its arcs is label noise to a classifier (which arc
    # is "first" is invisible): 10% of them cost about 3 points of held-out accuracy.
    "two_arc_fraction": 0.0,
    "epochs": 8,
    "batch_size": 128,
    "lr": 0.008,
    "weight_decay": 0.0005,
    "num_workers": 2,
    "num_threads": 2,
    "mean": list(MEAN),
    "std": list(STD),
    "config": CurveConfig().to_dict(),
}


def normalize(images: torch.Tensor) -> torch.Tensor:
    """Map images in [0, 1] to CurveNet's input scale ``(x - MEAN) / STD``."""
    mean = images.new_tensor(MEAN).view(1, 3, 1, 1)
    std = images.new_tensor(STD).view(1, 3, 1, 1)
    return (images - mean) / std


class CurveNetModule(ClassifierModule):
    """CurveNet in the common classifier module (cross-entropy, AdamW, one-cycle)."""

    def __init__(self, lr: float = 0.008, weight_decay: float = 0.0005) -> None:
        super().__init__(CurveNet(), MEAN, STD, NUM_CLASSES, lr=lr, weight_decay=weight_decay)


@torch.no_grad()
def evaluate_accuracy(model: nn.Module, dataset: Dataset, batch_size: int = 256) -> float:
    """Top-1 accuracy of a bare CurveNet (taking normalised input) on ``(image, label)`` items."""
    module = ClassifierModule(model, MEAN, STD, NUM_CLASSES)
    return train.evaluate_accuracy(module, dataset, batch_size)


def resolve_recipe(recipe: dict[str, Any]) -> dict[str, Any]:
    """``DEFAULT_RECIPE`` overridden by ``recipe``; unknown keys and a foreign mean/std fail."""
    unknown = sorted(set(recipe) - set(DEFAULT_RECIPE))
    if unknown:
        raise ValueError(f"unknown recipe keys {unknown}; valid: {sorted(DEFAULT_RECIPE)}")
    full = {**DEFAULT_RECIPE, **recipe}
    full["config"] = CurveConfig.from_dict(full["config"]).to_dict()
    if tuple(full["mean"]) != MEAN or tuple(full["std"]) != STD:
        raise ValueError(
            f"recipe mean/std {full['mean']}/{full['std']} differ from CurveNet's input "
            f"normalisation {MEAN}/{STD} (mti_lightning.core.zoo.curvenet)"
        )
    train.resolve_recipe(general_recipe(full))
    return full


def general_recipe(recipe: dict[str, Any]) -> dict[str, Any]:
    """The CurveNet recipe as a recipe of the common training path (:mod:`world.train`)."""
    kept = {k: v for k, v in recipe.items() if k not in ("mean", "std")}
    return {**kept, "model": "curvenet", "warmup": 0.3, "label_smoothing": 0.0}


def load_recipe(path: str | Path) -> dict[str, Any]:
    """The ``recipe`` section of a recipe YAML (as written by :func:`train_curvenet`)."""
    with open(path) as f:
        data = yaml.safe_load(f)
    if not isinstance(data, dict) or not isinstance(data.get("recipe"), dict):
        raise ValueError(f"{path} has no 'recipe' mapping")
    return data["recipe"]


def _make_logger(logger: str, log_dir: Path) -> Logger | bool:
    if logger == "csv":
        return CSVLogger(save_dir=log_dir, name="curvenet")
    if logger == "wandb":
        return WandbLogger(project="mti-lightning", name="curvenet", save_dir=log_dir, offline=True)
    if logger == "none":
        return False
    raise ValueError(f"logger must be 'csv', 'wandb' or 'none', got {logger!r}")


def train_curvenet(
    recipe: dict[str, Any],
    out_path: str | Path,
    logger: str = "csv",
    log_dir: Path | None = None,
) -> dict[str, Any]:
    """Train CurveNet per ``recipe`` (the common training path), write its weights to
    ``out_path`` and its record beside them (``.yaml``), return the results.

    Results: ``held_out_accuracy`` (single-arc images of ``test_seed``), ``val_accuracy``,
    ``train_seconds`` (rendering plus fitting), ``sha256`` and ``size_bytes`` of the weights.
    """
    full = resolve_recipe(recipe)
    log_dir = Path(log_dir) if log_dir is not None else Path("outputs") / "train_curvenet"
    lightning_logger = _make_logger(logger, log_dir)
    record = train.train_model(
        general_recipe(full),
        out_path,
        logger=lightning_logger,
        work_dir=log_dir,
        recipe_for_record=full,
    )
    if isinstance(lightning_logger, WandbLogger):
        lightning_logger.experiment.finish()
    return record["result"]


def main(argv: list[str] | None = None) -> None:
    """Command line: train, write weights to --out and recipe plus results beside them."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True, help="weights file (.safetensors)")
    parser.add_argument(
        "--recipe", type=Path, default=SHIPPED_RECIPE, help="recipe YAML (default: shipped)"
    )
    parser.add_argument("--logger", choices=("csv", "wandb", "none"), default="csv")
    parser.add_argument("--log-dir", type=Path, default=None)
    args = parser.parse_args(argv)

    recipe = resolve_recipe(load_recipe(args.recipe))
    results = train_curvenet(recipe, args.out, logger=args.logger, log_dir=args.log_dir)
    print(yaml.safe_dump(results, sort_keys=False))


if __name__ == "__main__":
    main()
