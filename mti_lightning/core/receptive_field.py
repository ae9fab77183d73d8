"""The receptive field of a unit read at one position: the canvas box a picture of it is
cropped to, so that a centre unit's image shows what the unit sees instead of a small patch
in a large untouched canvas.

Measured, not derived from kernel sizes, so it holds for any architecture: the gradient of
every channel of the unit's layer at the positions its readout reads, on a few random images.
``theoretical`` is the box of every input pixel that reaches the unit (nonzero gradient);
``effective`` the box holding the central 90 % of the gradient's mass along each axis (the
part that matters: a deep unit's theoretical field can span the whole canvas while most of
its weight stays near the middle). A unit read at ``mean`` or a class token (or a layer
without a spatial grid) sees the whole canvas: both boxes are the canvas.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch

from mti_lightning.core.features import FeatureSpec
from mti_lightning.core.models import LoadedModel
from mti_lightning.core.probes import capture
from mti_lightning.core.token_grid import layer_views

MASS = 0.9  # the effective field's share of the gradient's mass, along each axis


@dataclass(frozen=True)
class Box:
    """A box on a canvas of ``size`` (h, w): rows ``top..top+height``, columns likewise."""

    top: int
    left: int
    height: int
    width: int
    size: tuple[int, int]

    @property
    def whole(self) -> bool:
        """Whether the box is the whole canvas (nothing to crop)."""
        return (self.top, self.left, self.height, self.width) == (0, 0, *self.size)

    def scaled(self, size: tuple[int, int]) -> Box:
        """The same box on a canvas of another ``size`` (the search canvas the network's
        input is resized from), rounded outwards."""
        sy, sx = size[0] / self.size[0], size[1] / self.size[1]
        top, left = int(self.top * sy), int(self.left * sx)
        bottom = min(size[0], -int(-(self.top + self.height) * sy // 1))
        right = min(size[1], -int(-(self.left + self.width) * sx // 1))
        return Box(top, left, bottom - top, right - left, (int(size[0]), int(size[1])))

    def crop(self, images: torch.Tensor) -> torch.Tensor:
        """``images[..., box]``, scaled first when their canvas is not the box's."""
        box = self if tuple(images.shape[-2:]) == self.size else self.scaled(images.shape[-2:])
        return images[..., box.top : box.top + box.height, box.left : box.left + box.width]

    def as_dict(self) -> dict[str, int]:
        return {"top": self.top, "left": self.left, "height": self.height, "width": self.width}


@dataclass(frozen=True)
class ReceptiveField:
    """The unit's ``theoretical`` and ``effective`` boxes at the network's input size."""

    theoretical: Box
    effective: Box

    def as_dict(self) -> dict[str, object]:
        return {
            "theoretical": self.theoretical.as_dict(),
            "effective": self.effective.as_dict(),
            "theoretical_px": max(self.theoretical.height, self.theoretical.width),
            "effective_px": max(self.effective.height, self.effective.width),
            "input_px": list(self.theoretical.size),
        }


def _span(profile: torch.Tensor) -> tuple[tuple[int, int], tuple[int, int]]:
    """(start, length) of the nonzero support and of the central ``MASS`` of ``profile``."""
    nonzero = (profile > 0).nonzero().flatten()
    first, last = int(nonzero[0]), int(nonzero[-1])
    cum = profile.cumsum(0) / profile.sum()
    tail = (1 - MASS) / 2
    lo = int((cum < tail).sum())
    hi = int((cum < 1 - tail).sum())
    return (first, last - first + 1), (lo, hi - lo + 1)


def receptive_field(
    lm: LoadedModel, spec: FeatureSpec, draws: int = 4, seed: int = 0
) -> ReceptiveField:
    """The receptive field of ``spec``'s unit on ``draws`` seeded uniform-noise images at the
    network's input size (see the module doc)."""
    c, h, w = lm.input_size
    whole = Box(0, 0, h, w, (h, w))
    view = layer_views(lm.model, lm.input_size, [str(spec.ref)])[str(spec.ref)]
    on_grid = spec.position == "center" or isinstance(spec.position, tuple)
    if view.grid is None or not on_grid or view.layout in ("vector", "batched"):
        return ReceptiveField(whole, whole)
    gh, gw = view.grid
    i, j = (gh // 2, gw // 2) if spec.position == "center" else spec.position
    where = torch.zeros(view.channels, gh, gw)
    where[:, i, j] = 1.0
    mask = view.from_grid(where)
    gen = torch.Generator().manual_seed(seed)
    x = torch.rand(draws, c, h, w, generator=gen).requires_grad_(True)
    with torch.enable_grad():
        act = capture(lm.model, lm.normalize(x), [str(spec.ref)])[str(spec.ref)]
        (act.abs() * mask.to(act.dtype)).sum().backward()
    grad = x.grad.abs().sum((0, 1))
    if not bool((grad > 0).any()):
        return ReceptiveField(whole, whole)
    (t0, tn), (e0, en) = _span(grad.sum(1))
    (l0, ln), (f0, fn) = _span(grad.sum(0))
    return ReceptiveField(Box(t0, l0, tn, ln, (h, w)), Box(e0, f0, en, fn, (h, w)))


def receptive_fields(lm: LoadedModel, specs: Sequence[FeatureSpec]) -> list[ReceptiveField]:
    """Each spec's receptive field, measured once per layer and position (the channel does
    not change which pixels reach a position)."""
    seen: dict[tuple[str, str], ReceptiveField] = {}
    for spec in specs:
        key = (str(spec.ref), str(spec.position))
        if key not in seen:
            seen[key] = receptive_field(lm, spec)
    return [seen[(str(s.ref), str(s.position))] for s in specs]
