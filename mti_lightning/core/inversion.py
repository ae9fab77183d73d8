"""+/- attribution inversion: split an image into its excitatory and inhibitory components.

For image ``x`` with attribution ``A`` at layer ``L``, two images are rendered from noise: one
whose activations at ``L`` match ``relu(A)`` (what excites the feature), one that matches
``relu(-A)`` (what inhibits it), each with the spatial-channel cosine objective over the region
where ``|A|`` is non-negligible. On a transformer the objective reads the patch grid of ``L``'s
tokens (``core.token_grid``); the attribution of its non-patch tokens (class, distillation,
register tokens), which no image region can match, is reported beside the inversion.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from mti_lightning.core.attribution import attribute, crop_bounds, energies
from mti_lightning.core.features import Readout
from mti_lightning.core.models import LoadedModel
from mti_lightning.core.objectives import SpatialChannelCosine
from mti_lightning.core.token_grid import SpatialView, spatial_view
from mti_lightning.core.transforms import resize


@dataclass
class InversionTargets:
    """Targets ``(2K, C, H, W)`` on the layer's grid (rows ``0..K-1`` ``relu(A)``, ``K..2K-1``
    ``relu(-A)``), their crop bounds (None without cropping), the layer's spatial view, and
    per image ``(K,)`` the attribution energies of the grid and of the non-patch tokens
    (``prefix_*``, zero where the layer has none)."""

    targets: torch.Tensor
    bounds: torch.Tensor | None
    view: SpatialView
    aside: dict[str, torch.Tensor]


def inversion_targets(
    lm: LoadedModel,
    images: torch.Tensor,
    readout: Readout,
    layer: str,
    crop: bool = True,
) -> InversionTargets:
    """The +/- targets of ``images`` (one per feature of ``readout``) at ``layer``."""
    x = resize(images, lm.input_size[1:])
    raw = attribute(lm, x, readout, [layer]).maps[layer]
    view = spatial_view(lm.model, lm.input_size, layer, tuple(raw.shape[1:]))
    attr = view.require_grid("spatial map to invert").to_grid(raw)
    targets = torch.cat([attr.clamp_min(0), (-attr).clamp_min(0)])
    bounds = crop_bounds(attr).repeat(2, 1) if crop else None
    grid_e = energies(attr)
    prefix = view.prefix_part(raw)
    prefix_e = energies(prefix if prefix is not None else raw.new_zeros(len(raw), 1))
    aside = {
        "grid_e_plus": grid_e.e_plus,
        "grid_e_minus": grid_e.e_minus,
        "prefix_e_plus": prefix_e.e_plus,
        "prefix_e_minus": prefix_e.e_minus,
    }
    return InversionTargets(targets, bounds, view, aside)


def inversion_objective(
    lm: LoadedModel,
    images: torch.Tensor,
    readout: Readout,
    layer: str,
    power: float = 2.0,
    crop: bool = True,
) -> SpatialChannelCosine:
    """The objective of a batch of ``2K`` images inverting the +/- parts of ``K`` images."""
    t = inversion_targets(lm, images, readout, layer, crop)
    return SpatialChannelCosine(layer, t.targets, t.bounds, power, t.view)
