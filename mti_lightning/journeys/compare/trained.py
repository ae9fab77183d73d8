"""Trained networks for a comparison without pretrained weights: train on the curves world, or
reuse the cache entry of the same recipe (``compare.train``, ``compare.recipes``,
``compare.cache_dir``).

A timm (or torchvision) model of the comparison is trained when ``compare.train`` is on, it has
no entry in ``compare.checkpoints`` and ``model.pretrained`` is off; its recipe is the measured
one (world/recipes.py) or the default, overridden by ``compare.recipes.<model>``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

from mti_lightning.core.config_schema import MTIConfig
from mti_lightning.core.errors import MTIConfigError
from mti_lightning.core.zoo import BUILTIN_MODELS
from mti_lightning.journeys.compare.plan import compare_group
from mti_lightning.shells.loggers import make_logger
from mti_lightning.world.recipes import recipe_for
from mti_lightning.world.train import prepare_training
from mti_lightning.world.train_cache import cached_record, entry_dir, trained


def recipes_to_train(cfg: MTIConfig, models: Sequence[str]) -> dict[str, dict[str, Any]]:
    """The recipe of every model the comparison trains, each checked (before any work)."""
    c = compare_group(cfg)
    overrides = c.recipes or {}
    stray = sorted(set(overrides) - set(models))
    if stray:
        raise MTIConfigError(
            f"compare.recipes has entries for {stray}, which are not in models {list(models)}"
        )
    if not c.train or cfg.model.pretrained:
        return {}
    checkpoints = c.checkpoints or {}
    recipes = {}
    for name in models:
        if name in BUILTIN_MODELS or name in checkpoints:
            continue
        recipe = recipe_for(name, overrides.get(name))
        try:
            if cached_record(recipe, c.cache_dir) is None:
                prepare_training(recipe, asdict(cfg.trainer))
        except MTIConfigError as err:
            raise MTIConfigError(f"compare.recipes.{name}: {err}") from err
        recipes[name] = recipe
    return recipes


def train_models(
    cfg: MTIConfig, recipes: dict[str, dict[str, Any]], run_dir: Path
) -> dict[str, tuple[Path, str, dict[str, Any]]]:
    """``{model: (weights, loading note, record)}``, training the ones not in the cache."""
    c = compare_group(cfg)
    out = {}
    for name, recipe in recipes.items():
        where = entry_dir(recipe, c.cache_dir)
        if cached_record(recipe, c.cache_dir) is None:
            print(f"mti: training {name} on the curves world into {where}")
        weights, record, reused = trained(
            recipe,
            c.cache_dir,
            trainer=asdict(cfg.trainer),
            logger=make_logger("csv", where),
            progress_bar=cfg.trainer.progress_bar,
        )
        r = record["result"]
        note = (
            f"trained on curves, {100 * r['held_out_accuracy']:.1f}% held-out, "
            f"{r['train_seconds']:.0f} s ({'cached' if reused else 'trained now'}: {where.name})"
        )
        out[name] = (weights, note, record)
    return out
