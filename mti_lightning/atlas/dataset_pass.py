"""Stage 1, the dataset pass: attribution of the target feature for every image, as a
Lightning ``predict`` loop writing one shard file per range of images.

Each shard is one predict batch: its images are decoded in the data loader (undecodable
files are left out and listed), attributed in device-sized chunks and reduced on the device to
per-image numbers (activation; ``E+``/``E-`` in L1 and L2 and the spatially summed attribution
vector per layer; optionally the atlas layer's map cropped to the feature's window), and the
writer saves it atomically under its global index range. Under DDP the distributed sampler
gives each shard to one process; on resume, shards whose file exists are skipped before
decoding, so an interrupted pass continues at the first missing shard.
"""

from __future__ import annotations

import dataclasses
import shutil
import time
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import lightning as L
import torch
from lightning.pytorch.callbacks import BasePredictionWriter
from torch.utils.data import DataLoader

from mti_lightning.atlas.config import AtlasConfig
from mti_lightning.atlas.data import (
    DatasetSource,
    ImageSource,
    ShardDataset,
    resolve_source,
    shard_name,
    shard_ranges,
)
from mti_lightning.core.attribution import attribution_from, crop_bounds, energies
from mti_lightning.core.errors import MTIConfigError
from mti_lightning.core.fastnet import fast_network
from mti_lightning.core.features import Readout, build_readout
from mti_lightning.core.io import load_tensors, save_tensors, write_json
from mti_lightning.core.models import LoadedModel, load_model
from mti_lightning.core.probes import capture, layer_shapes
from mti_lightning.shells.heap import KeepFreedMemory
from mti_lightning.shells.trainer import check_trainer_options
from mti_lightning.world.photos import is_photos, photo_crops

Window = tuple[int, int, int, int]
ENERGY_KEYS = ("e_plus", "e_minus", "e_plus_l2", "e_minus_l2")


@dataclass
class PassSetup:
    """The validated model, feature, layers and data of a pass."""

    lm: LoadedModel
    readout: Readout
    source: ImageSource
    layers: list[str]
    shapes: dict[str, tuple[int, ...]]
    window: Window


def feature_window(lm: LoadedModel, readout: Readout, layer: str, n_samples: int = 8) -> Window:
    """Box ``(h0, h1, w0, w1)`` of ``layer``'s map outside which ``d f / d act`` is zero (from
    a few random images): the feature's receptive field at that layer, where its attribution
    can be non-zero."""
    device = next(iter(readout.buffers())).device
    gen = torch.Generator().manual_seed(0)
    x = torch.rand(n_samples, *lm.input_size, generator=gen).to(device)
    with torch.enable_grad():
        acts = capture(lm.model, lm.normalize(x.requires_grad_(True)), [layer, *readout.layers])
        values = readout(acts, n_samples)[0]
        (grad,) = torch.autograd.grad(values.sum(), acts[layer])
    box = crop_bounds(grad.abs().sum(0, keepdim=True), frac=1e-9)[0]
    h0, h1, w0, w1 = (int(v) for v in box)
    return h0, h1, w0, w1


def summed_vector(attr: torch.Tensor) -> torch.Tensor:
    """Attribution summed over positions: ``(B, C, H, W)`` or ``(B, N, C)`` -> ``(B, C)``."""
    if attr.dim() == 4:
        return attr.sum((2, 3))
    if attr.dim() == 3:
        return attr.sum(1)
    return attr


def reduce_batch(
    lm: LoadedModel,
    readout: Readout,
    images: torch.Tensor,
    layers: Sequence[str],
    map_layer: str | None = None,
    window: Window | None = None,
) -> dict[str, torch.Tensor]:
    """Per-image activation, energies and summed vectors at each layer (on the device), plus
    ``{map_layer}/map`` cropped to ``window`` when a map layer is given."""
    n = images.shape[0]
    with torch.enable_grad():
        x = lm.normalize(images.detach().requires_grad_(True))
        acts = capture(lm.model, x, [*layers, *readout.layers])
        values = readout(acts, n)[0]
        maps = attribution_from(acts, values, layers)
    out = {"activation": values.detach().float()}
    for layer in layers:
        attr = maps[layer].detach().float()
        for key, value in energies(attr).as_dict().items():
            if key in ENERGY_KEYS:
                out[f"{layer}/{key}"] = value
        out[f"{layer}/vector"] = summed_vector(attr)
        if layer == map_layer:
            h0, h1, w0, w1 = window or (0, attr.shape[2], 0, attr.shape[3])
            out[f"{layer}/map"] = attr[:, :, h0:h1, w0:w1].contiguous()
    return out


class AttributionPass(L.LightningModule):
    """Predict module: one shard in, its reduced per-image attribution results out."""

    def __init__(
        self,
        setup: PassSetup,
        chunk: int,
        map_layer: str | None,
        window: Window | None,
        fast_net: bool = True,
    ):
        super().__init__()
        self.lm, self.net, self.readout = setup.lm, setup.lm.model, setup.readout
        self.layers, self.shapes = list(setup.layers), setup.shapes
        self.chunk, self.map_layer, self.window = chunk, map_layer, window
        self.fast_net = fast_net
        self.pass_lm = setup.lm

    def on_predict_start(self) -> None:
        """With ``fast_net``, attribute on a copy of the network rewritten for speed (exact at
        the layers read; ``core.fastnet``)."""
        if self.fast_net:
            example = self.lm.normalize(torch.rand(2, *self.lm.input_size, device=self.device))
            layers = [*self.layers, *self.readout.layers]
            self.pass_lm = fast_network(self.lm, layers, example).lm

    def _empty(self) -> dict[str, torch.Tensor]:
        """Zero-row results of the right shapes (a shard whose every image failed)."""
        out = {"activation": torch.zeros(0, device=self.device)}
        for layer in self.layers:
            shape = self.shapes[layer]
            for key in ENERGY_KEYS:
                out[f"{layer}/{key}"] = torch.zeros(0, device=self.device)
            channels = shape[-1] if len(shape) == 2 else shape[0]
            out[f"{layer}/vector"] = torch.zeros(0, channels, device=self.device)
            if layer == self.map_layer:
                h0, h1, w0, w1 = self.window or (0, shape[1], 0, shape[2])
                out[f"{layer}/map"] = torch.zeros(0, shape[0], h1 - h0, w1 - w0, device=self.device)
        return out

    def predict_step(self, batch: dict[str, Any], batch_idx: int) -> dict[str, torch.Tensor] | None:
        if batch["skip"]:
            return None
        images = batch["images"]
        if images.shape[0] == 0:
            out = self._empty()
        else:
            parts = [
                reduce_batch(
                    self.pass_lm,
                    self.readout,
                    images[i : i + self.chunk],
                    self.layers,
                    self.map_layer,
                    self.window,
                )
                for i in range(0, images.shape[0], self.chunk)
            ]
            out = {k: torch.cat([p[k] for p in parts]) for k in parts[0]}
        out["index"], out["failed"] = batch["index"], batch["failed"]
        return out


class ShardWriter(BasePredictionWriter):
    """Saves each shard's results atomically as ``shard_<start>_<end>.safetensors``; counts
    the shards and images written (over all processes) and times the predict loop (decoding,
    attribution and writing, without the Trainer's set-up)."""

    def __init__(self, shard_dir: Path):
        super().__init__(write_interval="batch")
        self.shard_dir = shard_dir
        self.written = 0
        self.images = 0
        self.loop_s = 0.0
        self._start = 0.0

    def on_predict_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._start = time.perf_counter()

    def write_on_batch_end(
        self, trainer, pl_module, prediction, batch_indices, batch, batch_idx, dataloader_idx
    ) -> None:
        if prediction is None:
            return
        save_tensors(self.shard_dir / shard_name(batch["start"], batch["end"]), prediction)
        self.written += 1
        self.images += batch["end"] - batch["start"]

    def on_predict_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        """Wait for every process and sum their counts (an all-reduce, so also a barrier)."""
        self.loop_s = time.perf_counter() - self._start
        counts = torch.tensor([self.written, self.images], device=pl_module.device)
        counts = trainer.strategy.reduce(counts, reduce_op="sum")
        self.written, self.images = (int(v) for v in counts.tolist())


def write_curves(cfg: AtlasConfig, folder: Path) -> Path:
    """The built-in curve images as an image folder (files already there are kept)."""
    from mti_lightning.world.curve_dataset import write_image_folder

    return write_image_folder(
        folder, cfg.curves_n, cfg.curves_seed, None, cfg.curves_two_arc_fraction
    )


def load_atlas_model(cfg: AtlasConfig) -> LoadedModel:
    """The model ``cfg`` names, at its input size; seeded by ``cfg.seed``, so a random-init
    model is the same one on every resume."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(cfg.seed)
        lm = load_model(cfg.model, pretrained=cfg.pretrained, checkpoint=cfg.checkpoint or None)
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
    from mti_lightning.search.layer_choice import attribution_layer_auto

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
    check_trainer_options(cfg.accelerator, cfg.precision, cfg.devices)
    if len(set(cfg.layers)) != len(cfg.layers):
        raise MTIConfigError(f"layers={cfg.layers} lists a layer twice; give each once")
    lm = load_atlas_model(cfg) if lm is None else with_input_size(lm, cfg.input_size)
    readout = build_readout(lm.model, lm.input_size, [cfg.spec])
    shapes = layer_shapes(lm.model, lm.input_size, cfg.layers)
    atlas_shape = shapes[cfg.atlas_layer]
    if len(atlas_shape) != 3:
        raise MTIConfigError(
            f"the atlas layer {cfg.atlas_layer!r} has value shape {atlas_shape}; icons need a "
            "spatial map (C, H, W): put a convolutional layer first in layers"
        )
    reduce_batch(lm, readout, torch.rand(2, *lm.input_size), cfg.layers)  # upstream check
    window = feature_window(lm, readout, cfg.atlas_layer)
    if dataset is not None:
        source: ImageSource = DatasetSource(dataset, type(dataset).__name__, lm.input_size[1:])
    elif is_photos(cfg.data):  # scikit-image's photographs, seeded crops (world/photos.py)
        crops = photo_crops(cfg.data, lm.input_size[1])
        source = DatasetSource(crops, cfg.data, lm.input_size[1:], kind="photos")
    elif cfg.data == "curves":
        folder = Path(cfg.data_root) if cfg.data_root else run_dir / "data" / "curves"
        source = resolve_source("curves", write_curves(cfg, folder), lm.input_size[1:])
    else:
        source = resolve_source(
            cfg.data, Path(cfg.data_root) if cfg.data_root else None, lm.input_size[1:]
        )
    return PassSetup(lm, readout, source, list(cfg.layers), shapes, window)


def run_pass(setup: PassSetup, cfg: AtlasConfig, shard_dir: Path) -> dict[str, Any]:
    """Compute every missing shard; return the pass summary (``rank`` > 0 on other processes)."""
    shard_dir.mkdir(parents=True, exist_ok=True)
    dataset = ShardDataset(setup.source, cfg.shard_size, shard_dir)
    loader = DataLoader(
        dataset,
        batch_size=None,
        shuffle=False,
        num_workers=cfg.num_workers,
        persistent_workers=False,
    )
    window = setup.window if cfg.crop_maps else None
    module = AttributionPass(
        setup, cfg.batch_size, cfg.atlas_layer if cfg.store_maps else None, window, cfg.fast_net
    )
    writer = ShardWriter(shard_dir)
    trainer = L.Trainer(
        accelerator=cfg.accelerator,
        devices=cfg.devices,
        strategy=cfg.strategy,
        precision=cfg.precision,
        logger=False,
        callbacks=[writer, KeepFreedMemory()],
        enable_progress_bar=False,
        enable_model_summary=False,
        enable_checkpointing=False,
        inference_mode=False,
        default_root_dir=str(shard_dir.parent),
        benchmark=True,  # chunks share one shape: cuDNN picks its algorithms once
    )
    start = time.perf_counter()
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*does not have many workers.*")
        warnings.filterwarnings("ignore", message=".*infer the batch indices.*")
        trainer.predict(module, dataloaders=loader, return_predictions=False)
    wall = time.perf_counter() - start
    summary = {"rank": trainer.global_rank}
    if trainer.global_rank != 0:
        return summary
    ranges = shard_ranges(len(setup.source), cfg.shard_size)
    missing = [shard_name(a, b) for a, b in ranges if not (shard_dir / shard_name(a, b)).exists()]
    if missing:
        raise RuntimeError(f"dataset pass ended with {len(missing)} shards missing: {missing[:3]}")
    for tmp in shard_dir.glob(".*.tmp"):  # half-written by a killed run; no rank writes now
        tmp.unlink(missing_ok=True)
    failed = load_pass(shard_dir)["failed"].tolist()
    failed_files = [setup.source.name(i) for i in failed]
    write_json(shard_dir.parent / "failed.json", failed_files)
    for stale in shard_dir.parent.glob("shards-*"):
        if stale != shard_dir:
            shutil.rmtree(stale, ignore_errors=True)
    return {
        **summary,
        "n_files": len(setup.source),
        "n_images": len(setup.source) - len(failed),
        "n_failed": len(failed),
        "failed_files": failed_files[:50],
        "n_shards": len(ranges),
        "computed_shards": writer.written,
        "computed_images": writer.images,
        "pass_wall_s": wall,
        "loop_s": writer.loop_s,
        "images_per_s": writer.images / writer.loop_s if writer.written else None,
        "window": list(setup.window),
        "source": setup.source.identity(),
    }


def load_pass(shard_dir: Path) -> dict[str, torch.Tensor]:
    """All shards of a finished pass, concatenated in index order."""
    files = sorted(shard_dir.glob("shard_*.safetensors"))
    if not files:
        raise MTIConfigError(f"no dataset pass shards in {shard_dir}; run stage=dataset_pass")
    parts = [load_tensors(f) for f in files]
    return {k: torch.cat([p[k] for p in parts]) for k in parts[0]}


def recompute_maps(
    setup: PassSetup, indices: Sequence[int], layer: str, window: Window, batch_size: int
) -> torch.Tensor:
    """Attribution maps at ``layer`` cropped to ``window`` of the images ``indices`` (for a
    pass run with ``store_maps=false``), on the model's device, in batches."""
    device = next(setup.lm.model.parameters()).device
    parts = []
    for i in range(0, len(indices), batch_size):
        chunk = list(indices[i : i + batch_size])
        images = [setup.source.load(j) for j in chunk]
        bad = [setup.source.name(j) for j, img in zip(chunk, images) if img is None]
        if bad:
            raise MTIConfigError(f"images changed since the dataset pass, now unreadable: {bad}")
        out = reduce_batch(
            setup.lm, setup.readout, torch.stack(images).to(device), [layer], layer, window
        )
        parts.append(out[f"{layer}/map"].cpu())
    return torch.cat(parts)
