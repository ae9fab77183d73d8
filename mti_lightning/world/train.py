"""Train any network (CurveNet, timm, torchvision) on the curves world or an ImageFolder.

One code path for every architecture (``mti experiment=train``, the comparison's trained
models and CurveNet's shipped weights alike): a recipe (a plain dict, :data:`DEFAULT_RECIPE`
overridden) -> Lightning fit (any accelerator, DDP, precision, checkpoints, W&B/CSV logger)
-> held-out accuracy on images of a seed never trained on -> ``WEIGHTS`` (safetensors state
dict) and its record ``WEIGHTS.yaml`` (model constructor, recipe, seed, results, machine), which
``load_model(name, checkpoint=WEIGHTS)`` reads to build the same network at the same size.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from pathlib import Path
from typing import Any

import lightning as L
import torch
import torch.nn.functional as F
import yaml
from lightning.pytorch.callbacks import ModelCheckpoint
from torch import nn
from torch.utils.data import DataLoader, Dataset
from torchmetrics.classification import MulticlassAccuracy

from mti_lightning.core.errors import MTIConfigError
from mti_lightning.core.io import atomic_write, save_tensors
from mti_lightning.shells.images import report_undecodable
from mti_lightning.shells.trainer import check_trainer_options, make_trainer
from mti_lightning.world.curve_datamodule import CurveDataModule
from mti_lightning.world.curve_dataset import CurveDataset, RenderedCurveDataset
from mti_lightning.world.curves import NUM_CLASSES, CurveConfig
from mti_lightning.world.networks import Network, build_network
from mti_lightning.world.photos import is_photos, photo_cache_folder, write_photo_folder

DEFAULT_RECIPE: dict[str, Any] = {
    "model": "resnet10t",
    "kwargs": {},  # constructor arguments (timm: img_size, patch_size, drop_path_rate, ...)
    "data": "curves",  # or the path of an ImageFolder (ROOT/CLASS/*.png)
    "image_size": 64,  # the curves world's size; ImageFolder images are resized to it
    "seed": 0,
    "train_seed": 1000,
    "val_seed": 2000,
    "test_seed": 3000,
    "train_size": 12288,
    "val_size": 512,
    "test_size": 1024,
    "two_arc_fraction": 0.0,
    "epochs": 1,
    "max_steps": None,  # stop after this many optimiser steps (None: all epochs)
    "batch_size": 128,
    "lr": 0.002,
    "weight_decay": 0.05,
    "warmup": 0.3,  # fraction of the steps the one-cycle schedule spends rising to lr
    "label_smoothing": 0.0,
    "num_workers": 2,
    "num_threads": 2,
    "config": CurveConfig().to_dict(),
}
# keys that change speed, never the trained weights' meaning: left out of a recipe's hash
_RUNTIME_KEYS = ("num_workers", "num_threads")


def resolve_recipe(recipe: dict[str, Any]) -> dict[str, Any]:
    """``DEFAULT_RECIPE`` overridden by ``recipe``, checked: unknown keys or bad values fail."""
    unknown = sorted(set(recipe) - set(DEFAULT_RECIPE))
    if unknown:
        raise MTIConfigError(f"unknown recipe keys {unknown}; valid: {sorted(DEFAULT_RECIPE)}")
    full = {**DEFAULT_RECIPE, **{k: v for k, v in recipe.items() if v is not None}}
    full["max_steps"] = recipe.get("max_steps")
    try:
        full["config"] = CurveConfig.from_dict(full["config"]).to_dict()
    except (TypeError, ValueError) as err:
        raise MTIConfigError(f"recipe config: {err}") from err
    if len({full["train_seed"], full["val_seed"], full["test_seed"]}) < 3:
        raise MTIConfigError("train_seed, val_seed and test_seed must all differ")
    for key in ("train_size", "val_size", "test_size", "epochs", "batch_size", "image_size"):
        if not isinstance(full[key], int) or full[key] <= 0:
            raise MTIConfigError(f"train.{key}={full[key]}; need a positive integer")
    if full["max_steps"] is not None and (
        not isinstance(full["max_steps"], int) or full["max_steps"] < 1
    ):
        raise MTIConfigError(
            f"train.max_steps={full['max_steps']}; need at least 1 (or null: all epochs)"
        )
    for key, lo, hi in (("lr", 0, None), ("warmup", 0, 1), ("label_smoothing", 0, 1)):
        value = full[key]
        if not isinstance(value, (int, float)) or value < lo or (hi is not None and value >= hi):
            raise MTIConfigError(f"train.{key}={value} out of range")
    if not isinstance(full["kwargs"], dict):
        raise MTIConfigError(f"train.kwargs={full['kwargs']!r}; need a mapping")
    return full


def recipe_hash(recipe: dict[str, Any]) -> str:
    """Short hash of what a recipe trains (runtime keys aside): the key of a trained cache."""
    full = resolve_recipe(recipe)
    kept = {k: v for k, v in full.items() if k not in _RUNTIME_KEYS}
    return hashlib.sha256(json.dumps(kept, sort_keys=True).encode()).hexdigest()[:12]


def sha256_file(path: str | Path) -> str:
    """Hex sha256 of a file's bytes."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


class ClassifierModule(L.LightningModule):
    """A network with cross-entropy, AdamW and a one-cycle learning-rate schedule; takes
    images in [0, 1] and normalises them as the network expects."""

    def __init__(
        self,
        model: nn.Module,
        mean: tuple[float, ...],
        std: tuple[float, ...],
        num_classes: int,
        lr: float = 0.002,
        weight_decay: float = 0.05,
        warmup: float = 0.3,
        label_smoothing: float = 0.0,
    ) -> None:
        super().__init__()
        self.save_hyperparameters(ignore=["model"])
        self.model = model
        self.register_buffer("mean", torch.tensor(mean).view(1, -1, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(std).view(1, -1, 1, 1), persistent=False)
        self.train_acc = MulticlassAccuracy(num_classes=num_classes, average="micro")
        self.val_acc = MulticlassAccuracy(num_classes=num_classes, average="micro")

    def on_fit_start(self) -> None:
        """Channels-last layout: faster convolutions on CPU, same weights."""
        self.model.to(memory_format=torch.channels_last)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """Logits for images in [0, 1] (normalisation included)."""
        x = (images - self.mean) / self.std
        return self.model(x.contiguous(memory_format=torch.channels_last))

    def _step(self, batch: tuple[torch.Tensor, torch.Tensor], split: str, acc: nn.Module):
        images, labels = batch
        logits = self(images)
        smoothing = self.hparams.label_smoothing if split == "train" else 0.0
        loss = F.cross_entropy(logits, labels, label_smoothing=smoothing)
        acc(logits, labels)
        on_step = split == "train"
        self.log(
            f"{split}/loss", loss, on_step=on_step, on_epoch=True, prog_bar=True, sync_dist=True
        )
        self.log(f"{split}/acc", acc, on_step=on_step, on_epoch=True, prog_bar=True)
        return loss

    def training_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int):
        """Cross-entropy loss of one batch; logs train/loss and train/acc."""
        return self._step(batch, "train", self.train_acc)

    def validation_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> None:
        """Logs val/loss and val/acc."""
        self._step(batch, "val", self.val_acc)

    def configure_optimizers(self) -> dict[str, Any]:
        """AdamW with a per-step one-cycle schedule over the whole run."""
        h = self.hparams
        opt = torch.optim.AdamW(self.model.parameters(), lr=h.lr, weight_decay=h.weight_decay)
        sched = torch.optim.lr_scheduler.OneCycleLR(
            opt,
            max_lr=h.lr,
            total_steps=max(2, self.trainer.estimated_stepping_batches),
            pct_start=h.warmup,
        )
        return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step"}}


@torch.no_grad()
def evaluate_accuracy(module: ClassifierModule, dataset: Dataset, batch_size: int = 256) -> float:
    """Top-1 accuracy of ``module`` (taking images in [0, 1]) on ``(image, label)`` items."""
    was_training = module.training
    module.eval()
    correct = total = 0
    for images, labels in DataLoader(dataset, batch_size=batch_size):
        images = images.to(module.device)
        correct += int((module(images).argmax(1).cpu() == labels).sum())
        total += len(labels)
    module.train(was_training)
    return correct / total


def _data(full: dict[str, Any]) -> tuple[L.LightningDataModule, Any, int]:
    """The data module, a function giving the held-out test set, and the number of classes."""
    if full["data"] == "curves":
        if full["image_size"] != full["config"]["size"]:
            raise MTIConfigError(
                f"train.image_size={full['image_size']} but curve images are "
                f"{full['config']['size']} px; set train.config.size too"
            )
        config = CurveConfig.from_dict(full["config"])
        data = CurveDataModule(
            train_size=full["train_size"],
            val_size=full["val_size"],
            train_seed=full["train_seed"],
            val_seed=full["val_seed"],
            config=config,
            two_arc_fraction=full["two_arc_fraction"],
            batch_size=full["batch_size"],
            num_workers=full["num_workers"],
        )

        def test_set() -> Dataset:
            source = CurveDataset(full["test_size"], full["test_seed"], config)
            return RenderedCurveDataset(source, full["num_workers"])

        return data, test_set, NUM_CLASSES
    from mti_lightning.world.folder_data import FolderDataModule

    if is_photos(full["data"]):  # crops of scikit-image's photographs, a class per photograph
        size, spec = full["image_size"], full["data"]
        full = {**full, "data": str(write_photo_folder(spec, photo_cache_folder(spec, size), size))}

    data = FolderDataModule(
        full["data"],
        full["image_size"],
        full["train_size"],
        full["val_size"],
        full["test_size"],
        full["seed"],
        full["batch_size"],
    )
    return data, data.test_set, data.num_classes


def machine() -> dict[str, Any]:
    """Where a training ran: torch version, usable cores, load average (shared machines)."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return {
        "torch": str(torch.__version__),
        "cpu_cores": cores,
        "load_average": [round(v, 2) for v in os.getloadavg()],
    }


def _trainer_options(trainer: dict[str, Any] | None) -> dict[str, Any]:
    t = {"accelerator": "cpu", "devices": 1, "num_nodes": 1, "strategy": "auto", "precision": "32"}
    t.update({k: v for k, v in (trainer or {}).items() if k in t})
    check_trainer_options(t["accelerator"], str(t["precision"]), t["devices"])
    t["precision"] = str(t["precision"])
    return t


def prepare_training(
    recipe: dict[str, Any], trainer: dict[str, Any] | None = None
) -> tuple[dict[str, Any], L.LightningDataModule, Any, Network, dict[str, Any], int]:
    """Every check of a training before its work: the recipe, data, network, trainer options."""
    full = resolve_recipe(recipe)
    options = _trainer_options(trainer)
    data, test_set, num_classes = _data(full)
    torch.set_num_threads(full["num_threads"])
    L.seed_everything(full["seed"], workers=True, verbose=False)  # the weights are the seed's
    network = build_network(full["model"], num_classes, full["image_size"], full["kwargs"])
    return full, data, test_set, network, options, num_classes


def train_model(
    recipe: dict[str, Any],
    weights: str | Path,
    trainer: dict[str, Any] | None = None,
    logger: Any = False,
    work_dir: str | Path | None = None,
    resume: bool = False,
    progress_bar: bool = False,
    recipe_for_record: dict[str, Any] | None = None,
) -> dict[str, Any] | None:
    """Train per ``recipe``; write ``weights`` and its record ``weights.yaml``; return the record.

    ``trainer``: Lightning options (accelerator, devices, num_nodes, strategy, precision);
    ``logger``: a Lightning logger or False; ``work_dir``: Lightning checkpoints
    (``checkpoints/last.ckpt`` each epoch; ``resume`` continues from it). Under DDP only the
    first process evaluates and writes (the others return None). The record's ``result``
    holds ``held_out_accuracy`` (images of ``test_seed``), ``val_accuracy``, ``train_seconds``
    (data plus fitting), ``steps``, ``sha256`` and ``size_bytes`` of the weights.
    """
    full, data, test_set, network, options, num_classes = prepare_training(recipe, trainer)
    weights = Path(weights)
    work_dir = Path(work_dir) if work_dir is not None else weights.parent
    load_before = machine()["load_average"]
    start = time.perf_counter()
    module = ClassifierModule(
        network.model,
        network.mean,
        network.std,
        num_classes=num_classes,
        lr=full["lr"],
        weight_decay=full["weight_decay"],
        warmup=full["warmup"],
        label_smoothing=full["label_smoothing"],
    )
    steps_per_epoch = max(1, full["train_size"] // full["batch_size"])
    last = work_dir / "checkpoints" / "last.ckpt"
    fit = make_trainer(
        work_dir,
        full["max_steps"] or -1,
        logger=logger,
        callbacks=[ModelCheckpoint(dirpath=work_dir / "checkpoints", save_last=True)],
        log_every_n_steps=min(50, steps_per_epoch),
        progress_bar=progress_bar,
        requeue_signal=None,
        max_epochs=full["epochs"],
        deterministic=options["accelerator"] == "cpu",
        enable_checkpointing=True,
        # Lightning's own defaults, which the recorded recipes were measured with (the sanity
        # check's loader draws from the generator that then shuffles the training data)
        num_sanity_val_steps=2,
        benchmark=None,
        **options,
    )
    fit.fit(module, datamodule=data, ckpt_path=str(last) if resume and last.is_file() else None)
    if not fit.is_global_zero:
        return None
    train_seconds = time.perf_counter() - start
    module = module.to("cpu").float()
    module.model.to(memory_format=torch.contiguous_format)
    result = {
        "held_out_accuracy": evaluate_accuracy(module, test_set()),
        "val_accuracy": float(fit.callback_metrics.get("val/acc", float("nan"))),
        "train_seconds": round(train_seconds, 1),
        "steps": int(fit.global_step),
    }
    failed = getattr(data, "failed", None)  # an image folder's files that did not decode
    if failed is not None:
        report_undecodable("train", failed, len(data.files), work_dir / "failed.json")
    if logger:
        logger.log_metrics({"test/acc": result["held_out_accuracy"]}, step=fit.global_step)
        logger.save()
    weights.parent.mkdir(parents=True, exist_ok=True)
    save_tensors(weights, module.model.state_dict())
    result.update(sha256=sha256_file(weights), size_bytes=weights.stat().st_size)
    result.update(machine(), load_average_start=load_before)
    record = {
        "model": network.record(),
        "recipe": recipe_for_record if recipe_for_record is not None else full,
        "result": result,
    }
    atomic_write(
        weights.with_suffix(".yaml"),
        lambda tmp: tmp.write_text(yaml.safe_dump(record, sort_keys=False)),
    )
    return record
