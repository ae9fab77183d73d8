"""Stage 1 of the atlas, the dataset pass: the engine's one data pass (``shells/data_pass.py``)
of the atlas's feature over its image source (``shells/images.py``), with the attribution layers
and the atlas layer's maps (cropped to the feature's window) that the later stages read.

This module checks the atlas's inputs (model, feature, layers, data) before any work and turns
the atlas config into the pass's setup and options; the pass itself (sharded, resumable, DDP)
is the engine's.
"""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path
from typing import Any

import torch

import mti_lightning.world  # noqa: F401  (registers the built-in world's data sets)
from mti_lightning.core.errors import MTIConfigError
from mti_lightning.core.features import build_readout
from mti_lightning.core.layer_choice import attribution_layer_auto
from mti_lightning.core.models import LoadedModel, load_seeded
from mti_lightning.core.token_grid import layer_views
from mti_lightning.journeys.atlas.config import AtlasConfig
from mti_lightning.shells import data_pass
from mti_lightning.shells.data_pass import (
    PassOptions,
    PassSetup,
    Window,
    feature_window,
    recompute_maps,
    reduce_batch,
)
from mti_lightning.shells.images import SourceRequest, open_source

__all__ = [
    "PassSetup",
    "Window",
    "load_atlas_model",
    "load_pass",
    "pass_options",
    "prepare",
    "recompute_maps",
    "reduce_batch",
    "resolve_auto_layers",
    "run_pass",
    "with_input_size",
]


def load_atlas_model(cfg: AtlasConfig) -> LoadedModel:
    """The model ``cfg`` names, at its input size; seeded by ``cfg.seed``, so a random-init
    model is the same one on every resume."""
    lm = load_seeded(cfg.model, cfg.seed, cfg.pretrained, cfg.checkpoint or None)
    return with_input_size(lm, cfg.input_size)


def with_input_size(lm: LoadedModel, size: int | list[int]) -> LoadedModel:
    """``lm`` at input size ``size``: a side in px (square), ``[C, H, W]``, or 0 (its own)."""
    if isinstance(size, int):
        return (
            lm if not size else dataclasses.replace(lm, input_size=(lm.input_size[0], size, size))
        )
    return dataclasses.replace(lm, input_size=tuple(int(v) for v in size))


def resolve_auto_layers(cfg: AtlasConfig, lm: LoadedModel) -> AtlasConfig:
    """``cfg`` with ``auto`` in ``layers`` replaced by the feature's attribution layer (the
    model's own choice, else the block boundary before the feature)."""
    if "auto" not in cfg.layers:
        return cfg
    readout = build_readout(lm.model, lm.input_size, [cfg.spec])
    auto = attribution_layer_auto(lm, readout)
    layers = list(dict.fromkeys(auto if x == "auto" else x for x in cfg.layers))
    return dataclasses.replace(cfg, layers=layers)


def prepare(
    cfg: AtlasConfig, run_dir: Path, lm: LoadedModel | None = None, dataset: Any = None
) -> PassSetup:
    """Load and check model, feature, layers and data: every bad input fails here, first.
    ``lm``: an already loaded model; ``dataset``: a data set object (``cfg.data`` then only
    names it)."""
    pass_options(cfg).check()
    if len(set(cfg.layers)) != len(cfg.layers):
        raise MTIConfigError(f"layers={cfg.layers} lists a layer twice; give each once")
    lm = load_atlas_model(cfg) if lm is None else with_input_size(lm, cfg.input_size)
    readout = build_readout(lm.model, lm.input_size, [cfg.spec])
    views = layer_views(lm.model, lm.input_size, cfg.layers)
    atlas_view = views[cfg.atlas_layer]
    if atlas_view.grid is None:
        raise MTIConfigError(
            f"the atlas layer {cfg.atlas_layer!r} has value shape {atlas_view.shape}; icons need "
            f"a spatial map (C, H, W) or a transformer's patch grid, and {atlas_view.reason}: "
            "put a convolutional or token layer first in layers"
        )
    shapes = {k: v.shape for k, v in views.items()}
    reduce_batch(lm, readout, torch.rand(2, *lm.input_size), cfg.layers)  # upstream check
    window = feature_window(lm, readout, cfg.atlas_layer)
    size = lm.input_size[1:]
    request = SourceRequest(
        size,
        Path(cfg.data_root) if cfg.data_root else run_dir / "data" / re.sub(r"[^\w.-]+", "_", cfg.data),
        cfg.curves_n,
        cfg.curves_seed,
        {"two_arc_fraction": cfg.curves_two_arc_fraction},
    )
    data = cfg.data if dataset is None else dataset
    source = open_source(data, size, root=cfg.data_root or None, request=request)
    return PassSetup(lm, readout, source, list(cfg.layers), shapes, window)


def pass_options(cfg: AtlasConfig) -> PassOptions:
    """The data pass's options from the atlas config (the atlas layer's maps stored when
    ``store_maps``)."""
    return PassOptions(
        shard_size=cfg.shard_size,
        batch_size=cfg.batch_size,
        num_workers=cfg.num_workers,
        map_layer=cfg.atlas_layer if cfg.store_maps else None,
        crop_maps=cfg.crop_maps,
        fast_net=cfg.fast_net,
        accelerator=cfg.accelerator,
        devices=cfg.devices,
        strategy=cfg.strategy,
        precision=str(cfg.precision),
    )


def run_pass(setup: PassSetup, cfg: AtlasConfig, shard_dir: Path) -> dict[str, Any]:
    """Compute every missing shard; return the pass summary (``rank`` > 0 on other processes)."""
    return data_pass.run_pass(setup, pass_options(cfg), shard_dir, who="atlas")


def load_pass(shard_dir: Path) -> dict[str, torch.Tensor]:
    """All shards of a finished dataset pass, concatenated in index order."""
    if not any(shard_dir.glob("shard_*.safetensors")):
        raise MTIConfigError(f"no dataset pass shards in {shard_dir}; run stage=dataset_pass")
    return data_pass.load_pass(shard_dir)
