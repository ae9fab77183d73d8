"""Attribution ``A = act_L * d f / d act_L`` and the energies read off it.

``E+ = sum(relu(A))`` and ``E- = sum(relu(-A))`` (L1; L2 norms too) split a feature's drive
into excitation and inhibition; tension ``min(E+, E-)`` is large when an image does both.
Everything is computed on the device and reduced there; only reduced tensors come back.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import torch

from mti_lightning.core.errors import MTIConfigError
from mti_lightning.core.features import Readout
from mti_lightning.core.models import LoadedModel
from mti_lightning.core.probes import capture


def tension_ratio(e_plus: torch.Tensor, e_minus: torch.Tensor) -> torch.Tensor:
    """``min(E+, E-) / max(E+, E-)`` in [0, 1], elementwise; 0 where both are zero."""
    lo, hi = torch.minimum(e_plus, e_minus), torch.maximum(e_plus, e_minus)
    return torch.where(hi > 0, lo / hi.clamp_min(1e-30), torch.zeros_like(hi))


@dataclass
class Energies:
    """Per-image excitation/inhibition energies of an attribution map, each of shape (B,)."""

    e_plus: torch.Tensor
    e_minus: torch.Tensor
    e_plus_l2: torch.Tensor
    e_minus_l2: torch.Tensor

    @property
    def tension(self) -> torch.Tensor:
        return torch.minimum(self.e_plus, self.e_minus)

    @property
    def ratio(self) -> torch.Tensor:
        """``min/max`` in [0, 1]; 0 where the map is all zero."""
        return tension_ratio(self.e_plus, self.e_minus)

    def as_dict(self) -> dict[str, torch.Tensor]:
        return {
            "e_plus": self.e_plus,
            "e_minus": self.e_minus,
            "e_plus_l2": self.e_plus_l2,
            "e_minus_l2": self.e_minus_l2,
            "tension": self.tension,
            "tension_ratio": self.ratio,
        }


def energies(attr: torch.Tensor) -> Energies:
    """Energies of attribution maps ``(B, ...)``."""
    flat = attr.flatten(1).float()
    pos, neg = flat.clamp_min(0), (-flat).clamp_min(0)
    return Energies(
        e_plus=pos.sum(1),
        e_minus=neg.sum(1),
        e_plus_l2=pos.square().sum(1).sqrt(),
        e_minus_l2=neg.square().sum(1).sqrt(),
    )


def attribution_from(
    acts: dict[str, torch.Tensor],
    values: torch.Tensor,
    layers: Sequence[str],
    create_graph: bool = False,
) -> dict[str, torch.Tensor]:
    """``act * d(sum values)/d act`` for each layer, given a forward that captured ``acts``.

    Each image's value depends only on that image (frozen, eval-mode network), so one backward
    of the sum gives every image's own gradient.
    """
    tensors = [acts[name] for name in layers]
    grads = torch.autograd.grad(
        values.sum(), tensors, create_graph=create_graph, allow_unused=True, retain_graph=True
    )
    out = {}
    for name, act, grad in zip(layers, tensors, grads):
        if grad is None:
            raise MTIConfigError(
                f"attribution layer {name!r} does not lie upstream of the feature's layer; "
                "choose an earlier layer"
            )
        out[name] = act * grad
    return out


@dataclass
class Attribution:
    """Attribution of a batch of images: the feature's values (``activation``), and per layer
    the maps, their energies and the layer's own activations (``layer_acts``)."""

    activation: torch.Tensor
    maps: dict[str, torch.Tensor]
    energies: dict[str, Energies] = field(default_factory=dict)
    layer_acts: dict[str, torch.Tensor] = field(default_factory=dict)


def attribute(
    lm: LoadedModel,
    images: torch.Tensor,
    readout: Readout,
    layers: Sequence[str],
) -> Attribution:
    """Attribution of image k's feature (``readout`` spec k) at each of ``layers``.

    ``images`` are in [0, 1], shape ``(K, 3, H, W)`` at the model's input size.
    """
    if images.shape[0] != len(readout.specs):
        raise MTIConfigError(
            f"{images.shape[0]} images but {len(readout.specs)} features; give one per image"
        )
    with torch.enable_grad():
        x = lm.normalize(images.detach().requires_grad_(True))
        acts = capture(lm.model, x, [*layers, *readout.layers])
        values = readout(acts, 1)[:, 0]
        maps = attribution_from(acts, values, layers)
    maps = {k: v.detach() for k, v in maps.items()}
    return Attribution(
        activation=values.detach(),
        maps=maps,
        energies={k: energies(v) for k, v in maps.items()},
        layer_acts={k: acts[k].detach() for k in layers},
    )


def crop_bounds(attr: torch.Tensor, frac: float = 0.01) -> torch.Tensor:
    """Per image ``(h0, h1, w0, w1)`` (end exclusive) of the region where ``|A|`` exceeds
    ``frac`` of its maximum, for maps ``(B, C, H, W)``; the whole map where ``A`` is zero."""
    if attr.dim() != 4:
        raise MTIConfigError(f"crop bounds need maps (B, C, H, W), got shape {tuple(attr.shape)}")
    mag = attr.abs().sum(1)
    return _bbox(mag, frac)


def _bbox(mag: torch.Tensor, frac: float) -> torch.Tensor:
    """Bounding boxes ``(B, 4)`` of ``mag (B, H, W) > frac * max`` without host syncs."""
    b, h, w = mag.shape
    thr = mag.flatten(1).amax(1).view(b, 1, 1) * frac
    mask = (mag > thr) | (thr == 0)
    rows, cols = mask.any(2), mask.any(1)
    ar_h = torch.arange(h, device=mag.device)
    ar_w = torch.arange(w, device=mag.device)
    h0 = torch.where(rows, ar_h, h).amin(1)
    h1 = torch.where(rows, ar_h, -1).amax(1) + 1
    w0 = torch.where(cols, ar_w, w).amin(1)
    w1 = torch.where(cols, ar_w, -1).amax(1) + 1
    return torch.stack([h0, h1, w0, w1], 1)


def receptive_field(
    lm: LoadedModel, readout: Readout, n_samples: int = 4, frac: float = 1e-3, seed: int = 0
) -> torch.Tensor:
    """Gradient-based receptive field of each feature: bbox ``(K, 4)`` in input pixels of
    where ``|d f / d x|`` (over a few random images) exceeds ``frac`` of its maximum."""
    k = len(readout.specs)
    device = next(iter(readout.buffers())).device
    gen = torch.Generator(device="cpu").manual_seed(seed)
    x = torch.rand(k * n_samples, *lm.input_size, generator=gen).to(device).requires_grad_(True)
    with torch.enable_grad():
        acts = capture(lm.model, lm.normalize(x), readout.layers)
        values = readout(acts, n_samples)
        (grad,) = torch.autograd.grad(values.sum(), x)
    mag = grad.abs().sum(1).view(k, n_samples, *lm.input_size[1:]).sum(1)
    return _bbox(mag, frac)
