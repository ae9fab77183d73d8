"""+/- attribution inversion: split an image into its excitatory and inhibitory components.

For image ``x`` with attribution ``A`` at layer ``L``, two images are rendered from noise: one
whose activations at ``L`` match ``relu(A)`` (what excites the feature), one that matches
``relu(-A)`` (what inhibits it), each with the spatial-channel cosine objective over the region
where ``|A|`` is non-negligible.
"""

from __future__ import annotations

import torch

from mti_lightning.core.attribution import attribute, crop_bounds
from mti_lightning.core.features import Readout
from mti_lightning.core.models import LoadedModel
from mti_lightning.core.objectives import SpatialChannelCosine
from mti_lightning.core.transforms import resize


def inversion_targets(
    lm: LoadedModel,
    images: torch.Tensor,
    readout: Readout,
    layer: str,
    crop: bool = True,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Targets ``(2K, C, H, W)``: rows ``0..K-1`` are ``relu(A)``, ``K..2K-1`` ``relu(-A)``;
    and their crop bounds (None without cropping)."""
    x = resize(images, lm.input_size[1:])
    attr = attribute(lm, x, readout, [layer]).maps[layer]
    targets = torch.cat([attr.clamp_min(0), (-attr).clamp_min(0)])
    bounds = crop_bounds(attr).repeat(2, 1) if crop and attr.dim() == 4 else None
    return targets, bounds


def inversion_objective(
    lm: LoadedModel,
    images: torch.Tensor,
    readout: Readout,
    layer: str,
    power: float = 2.0,
    crop: bool = True,
) -> SpatialChannelCosine:
    """The objective of a batch of ``2K`` images inverting the +/- parts of ``K`` images."""
    targets, bounds = inversion_targets(lm, images, readout, layer, crop)
    if targets.dim() != 4:
        raise ValueError(
            f"inversion needs a spatial map at {layer!r}; got shape {tuple(targets.shape[1:])}"
        )
    return SpatialChannelCosine(layer, targets, bounds, power)
