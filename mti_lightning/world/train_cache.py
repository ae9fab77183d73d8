"""Trained networks kept in a cache directory keyed by recipe, so a comparison trains once.

``CACHE/<model>-<hash of the recipe>/model.safetensors`` with its record ``model.yaml``: a
finished entry (both files, the weights' checksum as recorded) is reused; anything else is
trained again, resuming from the entry's Lightning checkpoint when one is there.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import yaml

from mti_lightning.world.train import recipe_hash, resolve_recipe, sha256_file, train_model

DEFAULT_CACHE = "~/.cache/mti-lightning/trained"


def cache_root(cache_dir: str | Path | None = None) -> Path:
    """The cache directory: ``cache_dir``, else ``$MTI_TRAINED_CACHE``, else ``DEFAULT_CACHE``."""
    return Path(cache_dir or os.environ.get("MTI_TRAINED_CACHE") or DEFAULT_CACHE).expanduser()


def entry_dir(recipe: dict[str, Any], cache_dir: str | Path | None = None) -> Path:
    """Where the network of ``recipe`` is (or will be) kept."""
    full = resolve_recipe(recipe)
    name = full["model"].replace(":", "_").replace("/", "_")
    return cache_root(cache_dir) / f"{name}-{recipe_hash(full)}"


def cached_record(recipe: dict[str, Any], cache_dir: str | Path | None = None) -> dict | None:
    """The record of a finished, intact cache entry for ``recipe``, else None."""
    weights = entry_dir(recipe, cache_dir) / "model.safetensors"
    record_file = weights.with_suffix(".yaml")
    if not (weights.is_file() and record_file.is_file()):
        return None
    record = yaml.safe_load(record_file.read_text())
    if record.get("result", {}).get("sha256") != sha256_file(weights):
        return None
    return record


def trained(
    recipe: dict[str, Any],
    cache_dir: str | Path | None = None,
    trainer: dict[str, Any] | None = None,
    logger: Any = False,
    progress_bar: bool = False,
) -> tuple[Path, dict[str, Any], bool]:
    """Weights for ``recipe``: ``(weights path, record, reused)``, training when not cached."""
    weights = entry_dir(recipe, cache_dir) / "model.safetensors"
    record = cached_record(recipe, cache_dir)
    if record is not None:
        return weights, record, True
    record = train_model(
        recipe,
        weights,
        trainer=trainer,
        logger=logger,
        work_dir=weights.parent,
        resume=True,
        progress_bar=progress_bar,
    )
    return weights, record, False
