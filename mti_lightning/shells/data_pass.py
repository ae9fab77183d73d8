"""The one data pass: attribution and energies of given targets over an image source, as a
Lightning ``predict`` loop writing one shard file per range of images (sharded, resumable, DDP).

Each shard is one predict batch: its images are decoded in the data loader (undecodable items
are left out and listed), attributed in device-sized chunks and reduced on the device to
per-image numbers: each target's activation; ``E+``/``E-`` in L1 and L2 and the spatially summed
attribution vector per layer (optional); per channel, the sums of ``relu(A)`` and ``relu(-A)``
over positions (optional: every channel's share of E+ and E- from the one pass, as a circuit
reads them); optionally one layer's map cropped to a window. The writer saves
it atomically under its global index range. Under DDP the distributed sampler gives each shard
to one process; on resume, shards whose file exists are skipped before decoding, so an
interrupted pass continues at the first missing shard.

With one target (the atlas) a result has one row per image (``activation`` ``(N,)``,
``LAYER/vector`` ``(N, C)``); with ``T`` targets (the comparison's units) the target
is the second dimension (``(N, T)``, ``(N, T, C)``): each image goes through the network once
per target, ``batch_size`` (image, target) pairs at a time.

In census mode (the setup's ``units``, ``shells/unit_pass.py``) the pass reads every chosen
unit of whole layers at once: ``GROUP/KEY`` ``(N, K)`` per group of units, ``batch_size``
images at a time, with one forward per chunk (the closed form where the path is one
convolution, a batched backward elsewhere); shards, resume and DDP are the same.
"""

from __future__ import annotations

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
from torch.utils.data import DataLoader, Dataset

from mti_lightning.core.attribution import attribution_from, crop_bounds, energies
from mti_lightning.core.errors import MTIConfigError
from mti_lightning.core.fastnet import fast_network
from mti_lightning.core.features import Readout
from mti_lightning.core.io import load_tensors, save_tensors
from mti_lightning.core.models import LoadedModel
from mti_lightning.core.probes import capture
from mti_lightning.core.token_grid import spatial_view
from mti_lightning.shells.images import ImageSource, report_undecodable
from mti_lightning.shells.trainer import check_trainer_options, make_trainer
from mti_lightning.shells.unit_pass import UnitsReduce

Window = tuple[int, int, int, int]
ENERGY_KEYS = ("e_plus", "e_minus", "e_plus_l2", "e_minus_l2")


@dataclass
class PassSetup:
    """The validated model, targets (``readout``), layers and data of a pass; ``window``: the
    box of the stored maps (the feature's receptive field, :func:`feature_window`);
    ``units``: census mode (then ``readout`` is None and ``layers`` empty)."""

    lm: LoadedModel
    readout: Readout | None
    source: ImageSource
    layers: list[str]
    shapes: dict[str, tuple[int, ...]]
    window: Window | None = None
    units: UnitsReduce | None = None


@dataclass(frozen=True)
class PassOptions:
    """How a pass runs: images per shard file and (image, target) pairs per chunk; whether the
    summed attribution vectors are stored; whether the per-channel sums of ``relu(A)`` and
    ``relu(-A)`` are stored (``LAYER/channel_plus``, ``LAYER/channel_minus``); the layer whose
    map is stored (None: none), cropped to the setup's window; the fast network
    (``core.fastnet``); the Trainer's placement."""

    shard_size: int = 256
    batch_size: int = 64
    num_workers: int = 0
    vectors: bool = True
    channel_sums: bool = False
    map_layer: str | None = None
    crop_maps: bool = True
    fast_net: bool = True
    accelerator: str = "cpu"
    devices: Any = 1
    strategy: str = "auto"
    precision: str = "32"

    @classmethod
    def on_trainer(cls, trainer: Any, **options: Any) -> PassOptions:
        """A pass placed as the config's ``trainer`` group says (accelerator, devices,
        strategy, precision), with the journey's own ``options``."""
        return cls(
            accelerator=trainer.accelerator,
            devices=trainer.devices,
            strategy=trainer.strategy,
            precision=str(trainer.precision),
            **options,
        )

    def check(self) -> None:
        """Clear errors before any work."""
        check_trainer_options(self.accelerator, str(self.precision), self.devices)
        for key in ("shard_size", "batch_size"):
            if getattr(self, key) < 1:
                raise MTIConfigError(f"{key}={getattr(self, key)}; need at least 1")


def feature_window(lm: LoadedModel, readout: Readout, layer: str, n_samples: int = 8) -> Window:
    """Box ``(h0, h1, w0, w1)`` of ``layer``'s map (a transformer's: its patch grid) outside
    which ``d f / d act`` is zero (from a few random images): the feature's receptive field at
    that layer, where its attribution can be non-zero."""
    device = next(iter(readout.buffers())).device
    gen = torch.Generator().manual_seed(0)
    x = torch.rand(n_samples, *lm.input_size, generator=gen).to(device)
    with torch.enable_grad():
        acts = capture(lm.model, lm.normalize(x.requires_grad_(True)), [layer, *readout.layers])
        values = readout(acts, n_samples)[0]
        (grad,) = torch.autograd.grad(values.sum(), acts[layer])
    grad = spatial_view(lm.model, lm.input_size, layer, tuple(grad.shape[1:])).to_grid(grad)
    box = crop_bounds(grad.abs().sum(0, keepdim=True), frac=1e-9)[0]
    h0, h1, w0, w1 = (int(v) for v in box)
    return h0, h1, w0, w1


def summed_vector(attr: torch.Tensor, channels_last: bool = False) -> torch.Tensor:
    """Attribution summed over positions: ``(B, C, H, W)``, ``(B, H, W, C)`` (``channels_last``,
    Swin's stages) or ``(B, N, C)`` (every token) -> ``(B, C)``."""
    if channels_last:
        return attr.sum((1, 2))
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
    vectors: bool = True,
    channel_sums: bool = False,
) -> dict[str, torch.Tensor]:
    """Per-image activation, energies, (with ``vectors``) summed vectors and (with
    ``channel_sums``) per-channel sums of ``relu(A)`` and ``relu(-A)`` at each layer (on the
    device) of every target of ``readout``, plus ``{map_layer}/map`` cropped to ``window``
    when a map layer is given. With ``T > 1`` targets the target is dimension 1 of every
    result."""
    n, t = images.shape[0], len(readout.specs)
    with torch.enable_grad():
        x = lm.normalize(images.detach().requires_grad_(True))
        if t > 1:  # target-major: input k * n + i is image i for target k
            x = x.repeat(t, *[1] * (x.dim() - 1))
        acts = capture(lm.model, x, [*layers, *readout.layers])
        values = readout(acts, n)
        maps = attribution_from(acts, values, layers)

    def per_image(v: torch.Tensor) -> torch.Tensor:
        return v if t == 1 else v.reshape(t, n, *v.shape[1:]).transpose(0, 1)

    out = {"activation": values.detach().float()[0] if t == 1 else values.detach().float().T}
    for layer in layers:
        attr = maps[layer].detach().float()
        view = spatial_view(lm.model, lm.input_size, layer, attr.shape[1:])
        for key, value in energies(attr).as_dict().items():
            if key in ENERGY_KEYS:
                out[f"{layer}/{key}"] = per_image(value)
        channels_last = view.layout == "channels_last"
        if vectors:
            out[f"{layer}/vector"] = per_image(summed_vector(attr, channels_last))
        if channel_sums:
            out[f"{layer}/channel_plus"] = per_image(summed_vector(attr.clamp_min(0), channels_last))
            out[f"{layer}/channel_minus"] = per_image(
                summed_vector((-attr).clamp_min(0), channels_last)
            )
        if layer == map_layer:
            attr = view.to_grid(attr)
            h0, h1, w0, w1 = window or (0, attr.shape[2], 0, attr.shape[3])
            out[f"{layer}/map"] = per_image(attr[:, :, h0:h1, w0:w1]).contiguous()
    return out


def shard_name(start: int, end: int) -> str:
    """File name of the shard of images ``[start, end)``."""
    return f"shard_{start:09d}_{end:09d}.safetensors"


def shard_ranges(n: int, shard_size: int) -> list[tuple[int, int]]:
    """Consecutive ``[start, end)`` ranges of at most ``shard_size`` covering ``n`` images."""
    return [(s, min(s + shard_size, n)) for s in range(0, n, shard_size)]


class ShardDataset(Dataset):
    """Item ``s`` is shard ``s``: its decoded images, or a skip marker when its file exists.

    The item list is the same on every process (all shards), so a distributed sampler gives
    each shard to exactly one process however many shards a previous run left.
    """

    def __init__(self, source: ImageSource, shard_size: int, shard_dir: Path):
        self.source, self.shard_dir = source, shard_dir
        self.ranges = shard_ranges(len(source), shard_size)

    def __len__(self) -> int:
        return len(self.ranges)

    def __getitem__(self, s: int) -> dict[str, Any]:
        start, end = self.ranges[s]
        item: dict[str, Any] = {"start": start, "end": end}
        if (self.shard_dir / shard_name(start, end)).exists():
            return {**item, "skip": True}
        images, ok, failed = [], [], []
        for i in range(start, end):
            img = self.source.load(i)
            (failed if img is None else ok).append(i)
            if img is not None:
                images.append(img)
        stacked = torch.stack(images) if images else torch.zeros(0, 3, *self.source.size)
        return {
            **item,
            "skip": False,
            "images": stacked,
            "index": torch.tensor(ok, dtype=torch.int64),
            "failed": torch.tensor(failed, dtype=torch.int64),
        }


class AttributionPass(L.LightningModule):
    """Predict module: one shard in, its reduced per-image attribution results out."""

    def __init__(self, setup: PassSetup, options: PassOptions):
        super().__init__()
        self.lm, self.net, self.readout = setup.lm, setup.lm.model, setup.readout
        self.layers, self.shapes = list(setup.layers), setup.shapes
        self.map_layer = options.map_layer
        self.window = setup.window if options.crop_maps else None
        self.fast_net, self.vectors = options.fast_net, options.vectors
        self.units = setup.units
        self.channel_sums = options.channel_sums
        # images per chunk: ``batch_size`` (image, target) pairs go through the network at
        # once; in census mode ``batch_size`` images
        targets = 1 if setup.units is not None else len(setup.readout.specs)
        self.chunk = max(1, options.batch_size // targets)
        self.pass_lm = setup.lm

    def on_predict_start(self) -> None:
        """With ``fast_net``, attribute on a copy of the network rewritten for speed (exact at
        the layers read; ``core.fastnet``)."""
        if self.fast_net:
            example = self.lm.normalize(torch.rand(2, *self.lm.input_size, device=self.device))
            read = self.units.layers if self.units is not None else self.readout.layers
            layers = [*self.layers, *read]
            self.pass_lm = fast_network(self.lm, layers, example).lm

    def _empty(self) -> dict[str, torch.Tensor]:
        """Zero-row results of the right shapes (a shard whose every image failed)."""
        if self.units is not None:
            return self.units.empty(self.device)
        t = len(self.readout.specs)
        lead = (0,) if t == 1 else (0, t)
        out = {"activation": torch.zeros(lead, device=self.device)}
        for layer in self.layers:
            shape = self.shapes[layer]
            for key in ENERGY_KEYS:
                out[f"{layer}/{key}"] = torch.zeros(lead, device=self.device)
            channels = spatial_view(self.lm.model, self.lm.input_size, layer, shape).channels
            if self.vectors:
                out[f"{layer}/vector"] = torch.zeros(*lead, channels, device=self.device)
            if self.channel_sums:
                for key in ("channel_plus", "channel_minus"):
                    out[f"{layer}/{key}"] = torch.zeros(*lead, channels, device=self.device)
            if layer == self.map_layer:
                c, h, w = spatial_view(self.lm.model, self.lm.input_size, layer, shape).grid_shape
                h0, h1, w0, w1 = self.window or (0, h, 0, w)
                out[f"{layer}/map"] = torch.zeros(*lead, c, h1 - h0, w1 - w0, device=self.device)
        return out

    def predict_step(self, batch: dict[str, Any], batch_idx: int) -> dict[str, torch.Tensor] | None:
        if batch["skip"]:
            return None
        images = batch["images"]
        if images.shape[0] == 0:
            out = self._empty()
        else:
            if self.units is not None:
                parts = [
                    self.units(self.pass_lm, images[i : i + self.chunk])
                    for i in range(0, images.shape[0], self.chunk)
                ]
            else:
                parts = self._reduce(images)
            out = {k: torch.cat([p[k] for p in parts]) for k in parts[0]}
        out["index"], out["failed"] = batch["index"], batch["failed"]
        return out

    def _reduce(self, images: torch.Tensor) -> list[dict[str, torch.Tensor]]:
        """The per-target attribution of each chunk of ``images``."""
        return [
            reduce_batch(
                self.pass_lm,
                self.readout,
                images[i : i + self.chunk],
                self.layers,
                self.map_layer,
                self.window,
                self.vectors,
                self.channel_sums,
            )
            for i in range(0, images.shape[0], self.chunk)
        ]


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


def run_pass(
    setup: PassSetup, options: PassOptions, shard_dir: Path, who: str = "mti"
) -> dict[str, Any]:
    """Compute every missing shard of ``setup`` into ``shard_dir``; return the pass summary
    (only ``rank`` on processes other than the first).

    Items that did not decode are listed in ``shard_dir.parent / "failed.json"`` and counted on
    the console (as ``who``); sibling ``shards-*`` folders (passes of other settings) are
    removed once this one is whole.
    """
    shard_dir.mkdir(parents=True, exist_ok=True)
    dataset = ShardDataset(setup.source, options.shard_size, shard_dir)
    loader = DataLoader(
        dataset,
        batch_size=None,
        shuffle=False,
        num_workers=options.num_workers,
        persistent_workers=False,
    )
    module = AttributionPass(setup, options)
    writer = ShardWriter(shard_dir)
    trainer = make_trainer(
        shard_dir.parent,
        -1,
        accelerator=options.accelerator,
        devices=options.devices,
        strategy=options.strategy,
        precision=str(options.precision),
        callbacks=[writer],
        requeue_signal=None,
        inference_mode=False,
    )
    start = time.perf_counter()
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*does not have many workers.*")
        warnings.filterwarnings("ignore", message=".*infer the batch indices.*")
        trainer.predict(module, dataloaders=loader, return_predictions=False)
    wall = time.perf_counter() - start
    summary: dict[str, Any] = {"rank": trainer.global_rank}
    if trainer.global_rank != 0:
        return summary
    ranges = shard_ranges(len(setup.source), options.shard_size)
    missing = [shard_name(a, b) for a, b in ranges if not (shard_dir / shard_name(a, b)).exists()]
    if missing:
        raise RuntimeError(f"data pass ended with {len(missing)} shards missing: {missing[:3]}")
    for tmp in shard_dir.glob(".*.tmp"):  # half-written by a killed run; no rank writes now
        tmp.unlink(missing_ok=True)
    failed = load_pass(shard_dir)["failed"].tolist()
    failed_files = [setup.source.name(i) for i in failed]
    report_undecodable(who, failed_files, len(setup.source), shard_dir.parent / "failed.json")
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
        "window": list(setup.window) if setup.window else None,
        "source": setup.source.identity(),
    }


def load_pass(shard_dir: Path) -> dict[str, torch.Tensor]:
    """All shards of a finished pass, concatenated in index order."""
    files = sorted(shard_dir.glob("shard_*.safetensors"))
    if not files:
        raise MTIConfigError(f"no data pass shards in {shard_dir}; run the data pass first")
    parts = [load_tensors(f) for f in files]
    return {k: torch.cat([p[k] for p in parts]) for k in parts[0]}


def recompute_maps(
    setup: PassSetup, indices: Sequence[int], layer: str, window: Window, batch_size: int
) -> torch.Tensor:
    """Attribution maps at ``layer`` cropped to ``window`` of the images ``indices`` (for a
    pass run without stored maps), on the model's device, in batches."""
    device = next(setup.lm.model.parameters()).device
    parts = []
    for i in range(0, len(indices), batch_size):
        chunk = list(indices[i : i + batch_size])
        images = [setup.source.load(j) for j in chunk]
        bad = [setup.source.name(j) for j, img in zip(chunk, images) if img is None]
        if bad:
            raise MTIConfigError(f"images changed since the data pass, now unreadable: {bad}")
        out = reduce_batch(
            setup.lm, setup.readout, torch.stack(images).to(device), [layer], layer, window
        )
        parts.append(out[f"{layer}/map"].cpu())
    return torch.cat(parts)
