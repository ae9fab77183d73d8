"""Scores of a final image for one unit, on a code path of their own (never the search's):
the unit's value on the image as is, its mean over seeded random views the search never saw
(robustness), the value over the largest one over photo crops (value vs data), and the share
of spectral power above half Nyquist (how much of the image is high-frequency pattern).

Lives in ``benchmarks/``: only the quality benchmark uses it, and an independent scorer must
not import the engine's readouts, transforms or objectives (a shared bug would then score
itself). The network is a plain ``nn.Module`` with a ``normalize`` callable before it.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Literal

import torch
import torchvision.transforms.v2.functional as TF
from torch import nn

Normalize = Callable[[torch.Tensor], torch.Tensor]


@dataclass(frozen=True)
class Unit:
    """A channel of a layer's output, read as its spatial mean or at its centre position."""

    layer: str
    channel: int
    kind: Literal["mean", "center"] = "center"

    @property
    def target(self) -> str:
        """The engine's target string for this unit (``LAYER:CHANNEL@POSITION``)."""
        return f"{self.layer}:{self.channel}@{self.kind}"


def unit_values(
    model: nn.Module, normalize: Normalize, unit: Unit, images: torch.Tensor
) -> torch.Tensor:
    """The unit's value on each image of ``images`` ``(B, 3, H, W)`` in [0, 1]: one per image."""
    captured: list[torch.Tensor] = []
    module = dict(model.named_modules())[unit.layer]
    handle = module.register_forward_hook(lambda _m, _i, out: captured.append(out))
    try:
        with torch.no_grad():
            model(normalize(images))
    finally:
        handle.remove()
    return read_unit(captured[0], unit)


def read_unit(out: torch.Tensor, unit: Unit) -> torch.Tensor:
    """The unit's value per image from its layer's output ``(B, C, H, W)``."""
    channel = out[:, unit.channel]
    if unit.kind == "mean":
        return channel.mean(dim=(1, 2))
    h, w = channel.shape[-2:]
    return channel[:, h // 2, w // 2]


def random_views(
    image: torch.Tensor,
    n: int = 16,
    seed: int = 0,
    scale: tuple[float, float] = (0.7, 1.0),
    degrees: float = 15.0,
) -> torch.Tensor:
    """``n`` seeded views of ``image`` ``(3, H, W)``: a random square crop of a uniform share
    ``scale`` of the area, resized back to ``H x W``, then a rotation by a uniform angle in
    ``+-degrees`` (edges filled with grey 0.5). A fixed generator: the same views every call."""
    g = torch.Generator().manual_seed(seed)
    _, h, w = image.shape
    views = []
    for _ in range(n):
        share = scale[0] + (scale[1] - scale[0]) * torch.rand((), generator=g).item()
        side_h, side_w = max(1, round(h * math.sqrt(share))), max(1, round(w * math.sqrt(share)))
        top = int(torch.randint(0, h - side_h + 1, (), generator=g))
        left = int(torch.randint(0, w - side_w + 1, (), generator=g))
        angle = (2 * torch.rand((), generator=g).item() - 1) * degrees
        view = TF.resized_crop(image, top, left, side_h, side_w, [h, w], antialias=True)
        views.append(TF.rotate(view, angle, fill=[0.5, 0.5, 0.5]))
    return torch.stack(views)


def robustness(
    model: nn.Module,
    normalize: Normalize,
    unit: Unit,
    image: torch.Tensor,
    n: int = 16,
    seed: int = 0,
) -> float:
    """The unit's mean value over :func:`random_views` of ``image`` (views never optimised)."""
    return float(unit_values(model, normalize, unit, random_views(image, n, seed)).mean())


def data_max(
    model: nn.Module, normalize: Normalize, units: list[Unit], batches: Iterable[torch.Tensor]
) -> dict[Unit, float]:
    """Each unit's largest value over the data set's images (``batches`` of ``(B, 3, H, W)``)."""
    best = {u: -math.inf for u in units}
    for batch in batches:
        for u in units:
            best[u] = max(best[u], float(unit_values(model, normalize, u, batch).max()))
    return best


def high_frequency_share(image: torch.Tensor) -> float:
    """Share of the spectral power of the mean-removed grey image at radial frequency above
    half Nyquist (``|f| > 0.25`` cycles per pixel); 0 for a constant image."""
    grey = image.mean(dim=0) if image.dim() == 3 else image
    grey = grey - grey.mean()
    power = torch.fft.fft2(grey.double()).abs() ** 2
    fy = torch.fft.fftfreq(grey.shape[0], dtype=torch.float64)[:, None]
    fx = torch.fft.fftfreq(grey.shape[1], dtype=torch.float64)[None, :]
    radius = torch.sqrt(fy**2 + fx**2) / 0.5  # in units of Nyquist
    total = float(power.sum())
    return float(power[radius > 0.5].sum()) / total if total > 0 else 0.0


def scores(
    model: nn.Module,
    normalize: Normalize,
    unit: Unit,
    image: torch.Tensor,
    unit_data_max: float,
    views: int = 16,
    seed: int = 0,
) -> dict[str, float]:
    """All four scores of one final image ``(3, H, W)`` for ``unit``."""
    value = float(unit_values(model, normalize, unit, image[None])[0])
    return {
        "value": value,
        "robust": robustness(model, normalize, unit, image, views, seed),
        "vs_data": value / unit_data_max if unit_data_max else math.nan,
        "high_freq": high_frequency_share(image),
    }
