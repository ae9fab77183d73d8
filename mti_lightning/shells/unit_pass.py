"""The data pass's census mode: every chosen unit of a layer at once, per image.

A :class:`UnitGroup` is a set of channels of one layer with its attribution layer; where the
path between them is one convolution (+ eval BatchNorm) its energies come from the closed form
(``core.conv_energy``) on the attribution layer's map, so the forward stops there and every
group of that kind shares it; elsewhere one forward and one batched backward per group
(``core.unit_attribution``). :class:`UnitsReduce` is what the data pass calls per chunk of
images in place of its per-target attribution: it returns ``GROUP/KEY`` tensors ``(B, K)``
(``KEY`` in :data:`UNIT_KEYS`), reduced on the device.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from mti_lightning.core.conv_energy import ConvPath, conv_unit_energies, mean_gradient
from mti_lightning.core.models import LoadedModel
from mti_lightning.core.probes import capture
from mti_lightning.core.unit_attribution import unit_energies

UNIT_KEYS = ("e_plus", "e_minus", "e_plus_l2", "e_minus_l2", "activation")


@dataclass(frozen=True)
class UnitGroup:
    """Channels ``channels`` of ``layer`` with attribution at ``attr_layer``; ``path``: the
    one convolution between them, or None (the batched path); ``key``: the prefix of its
    results."""

    key: str
    layer: str
    attr_layer: str
    channels: tuple[int, ...]
    path: ConvPath | None


class UnitsReduce:
    """Per-image energies and activations of every group, for chunks of images.

    Holds the convolution and BatchNorm modules of the closed-form groups (modules of the
    original network, moved to the device with it); ``units_per_backward`` bounds the maps a
    batched backward holds per image."""

    def __init__(
        self,
        model: nn.Module,
        groups: list[UnitGroup],
        position: str,
        units_per_backward: int = 64,
    ):
        self.groups, self.position = groups, position
        self.units_per_backward = units_per_backward
        self.modules: dict[str, tuple[nn.Module, nn.Module | None]] = {}
        self.mean_grads: dict[tuple, torch.Tensor] = {}  # position mean: one per group
        for g in groups:
            if g.path is not None:
                bn = model.get_submodule(g.path.bn) if g.path.bn else None
                self.modules[g.key] = (model.get_submodule(g.path.conv), bn)

    @property
    def layers(self) -> list[str]:
        """Every layer a forward must reach (the fast network keeps them exact)."""
        out = [g.attr_layer for g in self.groups]
        out += [g.layer for g in self.groups if g.path is None]
        return list(dict.fromkeys(out))

    def __call__(self, lm: LoadedModel, images: torch.Tensor) -> dict[str, torch.Tensor]:
        out: dict[str, torch.Tensor] = {}
        closed = [g for g in self.groups if g.path is not None]
        if closed:
            with torch.no_grad():
                x = lm.normalize(images)
                acts = capture(lm.model, x, list(dict.fromkeys(g.attr_layer for g in closed)))
                for g in closed:
                    a = acts[g.attr_layer].float()
                    channels = torch.tensor(g.channels, dtype=torch.int64, device=a.device)
                    grad = self._mean_grad(g, channels, a) if self.position == "mean" else None
                    found = conv_unit_energies(
                        a, *self.modules[g.key], channels, self.position, grad
                    )
                    out.update({f"{g.key}/{k}": found[k] for k in UNIT_KEYS})
        for g in self.groups:
            if g.path is None:
                found = unit_energies(
                    lm,
                    images,
                    g.layer,
                    g.channels,
                    g.attr_layer,
                    self.position,
                    self.units_per_backward,
                )
                out.update({f"{g.key}/{k}": found[k].detach().float() for k in UNIT_KEYS})
        return out

    def _mean_grad(self, g: UnitGroup, channels: torch.Tensor, a: torch.Tensor) -> torch.Tensor:
        """The group's mean-position gradient, computed once per map shape and device."""
        key = (g.key, tuple(a.shape[1:]), a.device, a.dtype)
        if key not in self.mean_grads:
            self.mean_grads[key] = mean_gradient(*self.modules[g.key], channels, a)
        return self.mean_grads[key]

    def empty(self, device: torch.device) -> dict[str, torch.Tensor]:
        """Zero-row results (a shard whose every image failed to decode)."""
        return {
            f"{g.key}/{k}": torch.zeros(0, len(g.channels), device=device)
            for g in self.groups
            for k in UNIT_KEYS
        }
