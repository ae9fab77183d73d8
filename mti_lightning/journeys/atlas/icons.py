"""Stage 5, icons: grid the layout, average the attribution map of each occupied cell and
render every cell's icon in one batched MTISearch.

Each icon (one image of the batch) matches its cell's mean attribution map ``M`` with the
spatial-channel cosine objective on ``relu(M) + boost * relu(-M)`` (absolute values, the
inhibitory part boosted), inside the feature's window at the layer. Split icons render
``relu(M)`` and ``relu(-M)`` as two more images of the same batch. After rendering, each
icon's own activation of the feature is measured, and icons (and their transparency from
accumulated pixel gradients) are cropped to the feature's receptive field on the canvas.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from mti_lightning.core.attribution import receptive_field
from mti_lightning.core.features import Readout
from mti_lightning.core.models import LoadedModel
from mti_lightning.core.objectives import SpatialChannelCosine
from mti_lightning.core.parameterizations import FourierImage
from mti_lightning.core.token_grid import SpatialView
from mti_lightning.core.transforms import TransformConfig, resize
from mti_lightning.journeys.atlas.dataset_pass import Window, reduce_batch
from mti_lightning.shells.callbacks import TransparencyMaps
from mti_lightning.shells.engine import EngineOptions, optimise
from mti_lightning.shells.search import MTISearch


def assign_cells(layout: np.ndarray, grid: int) -> np.ndarray:
    """Cell ``row * grid + col`` of each point of a layout in [0, 1]^2 (row 0 at the top, so
    the grid reads like the layout plotted with y up)."""
    col = np.clip(np.floor(layout[:, 0] * grid), 0, grid - 1)
    row = np.clip(np.floor((1.0 - layout[:, 1]) * grid), 0, grid - 1)
    return (row * grid + col).astype(np.int64)


def occupied_cells(cells: np.ndarray, min_images: int) -> tuple[np.ndarray, np.ndarray]:
    """Ids of the cells holding at least ``min_images`` points, and their counts."""
    ids, counts = np.unique(cells, return_counts=True)
    keep = counts >= min_images
    return ids[keep], counts[keep]


def cell_means(values: torch.Tensor, cells: np.ndarray, ids: np.ndarray) -> torch.Tensor:
    """Mean of ``values`` (one row per point) over the points of each cell in ``ids``."""
    slot = {int(c): k for k, c in enumerate(ids)}
    member = torch.tensor([slot.get(int(c), -1) for c in cells])
    keep = member >= 0
    v = values[keep].double()
    sums = v.new_zeros(len(ids), *values.shape[1:]).index_add_(0, member[keep], v)
    counts = torch.bincount(member[keep], minlength=len(ids)).to(v.dtype)
    return (sums / counts.view(-1, *([1] * (values.dim() - 1)))).to(values.dtype)


def icon_targets(
    mean_maps: torch.Tensor,
    map_window: Window,
    layer_shape: tuple[int, int, int],
    boost: float,
    split: bool,
) -> torch.Tensor:
    """Targets ``(K or 3K, C, H, W)`` at the layer from cell means cropped to ``map_window``:
    the icons ``relu(M) + boost * relu(-M)``, then (``split``) ``relu(M)`` and ``relu(-M)``."""
    h0, h1, w0, w1 = map_window
    full = mean_maps.new_zeros(mean_maps.shape[0], *layer_shape)
    full[:, :, h0:h1, w0:w1] = mean_maps
    pos, neg = full.clamp_min(0), (-full).clamp_min(0)
    parts = [pos + boost * neg] + ([pos, neg] if split else [])
    return torch.cat(parts)


def canvas_box(rf: torch.Tensor, input_hw: tuple[int, int], canvas: int) -> Window:
    """A box ``(h0, h1, w0, w1)`` in model-input pixels scaled to a square canvas."""
    sh, sw = canvas / input_hw[0], canvas / input_hw[1]
    h0, h1, w0, w1 = (float(v) for v in rf)
    return (
        int(np.floor(h0 * sh)),
        min(canvas, int(np.ceil(h1 * sh))),
        int(np.floor(w0 * sw)),
        min(canvas, int(np.ceil(w1 * sw))),
    )


@dataclass
class RenderedIcons:
    """Icons on the full canvas, their alpha, the crop box and their measured feature."""

    images: torch.Tensor
    alpha: torch.Tensor
    crop: Window
    activation: torch.Tensor
    e_plus: torch.Tensor
    e_minus: torch.Tensor

    def cropped(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Images ``(K, 3, h, w)`` and alpha ``(K, h, w)`` inside the crop box."""
        h0, h1, w0, w1 = self.crop
        return self.images[:, :, h0:h1, w0:w1], self.alpha[:, h0:h1, w0:w1]


def render_icons(
    lm: LoadedModel,
    readout: Readout,
    view: SpatialView,
    targets: torch.Tensor,
    window: Window,
    work_dir: Path,
    canvas: int,
    steps: int,
    lr: float,
    draws: int,
    power: float,
    transform: TransformConfig,
    seed: int,
    accelerator: str = "cpu",
    crop: bool = True,
    fast_net: bool = True,
) -> RenderedIcons:
    """Render one image per target (on the grid of the layer that ``view`` describes: a map,
    or a transformer's patch grid) in a single MTISearch, run by the engine, and measure the
    feature on each."""
    k, layer = targets.shape[0], view.layer
    bounds = torch.tensor(window).repeat(k, 1)
    objective = SpatialChannelCosine(layer, targets, bounds, power, view)
    param = FourierImage(k, (canvas, canvas), seed=seed)
    search = MTISearch(
        lm, param, objective, readout=None, transform=transform, lr=lr, fast_net=fast_net
    )
    alpha = TransparencyMaps()
    options = EngineOptions(accelerator=accelerator)
    optimise(search, steps, draws, seed, work_dir, options, callbacks=[alpha])
    images = search().detach()
    measured = reduce_batch(lm, readout, resize(images, lm.input_size[1:]), [layer])
    box = (0, canvas, 0, canvas)
    if crop:
        rf = receptive_field(lm, readout.to(images.device))[0]
        box = canvas_box(rf, lm.input_size[1:], canvas)
    return RenderedIcons(
        images=images.cpu(),
        alpha=alpha.alpha.cpu(),
        crop=box,
        activation=measured["activation"].cpu(),
        e_plus=measured[f"{layer}/e_plus"].cpu(),
        e_minus=measured[f"{layer}/e_minus"].cpu(),
    )
