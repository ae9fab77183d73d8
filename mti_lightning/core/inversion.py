"""+/- attribution inversion: split an image into its excitatory and inhibitory components.

For image ``x`` with activations ``a`` and attribution ``A = a * df/da`` at layer ``L``, two
images are rendered from noise: one whose activations at ``L`` match the excitatory part of
``A``, one the inhibitory part, each with the spatial-channel cosine objective over the region
where ``|A|`` is non-negligible. The part's target is ``match``:

- ``"signed_attribution"`` (the default): ``sign(a) * relu(A)`` and ``sign(a) * relu(-A)``.
  On a layer after a ReLU (``a >= 0``) these are the paper's targets. On a layer with signed
  activations (a linear bottleneck, a residual stream) a channel with ``a < 0`` and
  ``df/da < 0`` excites: its target stays negative, so the + inversion still drives the
  feature up there, and the - inversion down.
- ``"relu_attribution"``: ``relu(A)`` and ``relu(-A)`` on every layer, the paper's targets
  as written: on a signed layer, matching ``relu(A) > 0`` where ``a < 0`` inhibits.

Both vanish where ``A`` does, so a target moves continuously with the image (two processes
whose images differ by rounding get the same inversions up to rounding).

On a transformer the objective reads the patch grid of ``L``'s tokens (``core.token_grid``);
the attribution of its non-patch tokens (class, distillation, register tokens), which no image
region can match, is reported beside the inversion.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from mti_lightning.core.attribution import attribute, crop_bounds, energies
from mti_lightning.core.config_schema import INVERSION_MATCHES
from mti_lightning.core.errors import MTIConfigError
from mti_lightning.core.features import Readout
from mti_lightning.core.models import LoadedModel
from mti_lightning.core.objectives import SpatialChannelCosine
from mti_lightning.core.token_grid import SpatialView, spatial_view
from mti_lightning.core.transforms import resize


@dataclass
class InversionTargets:
    """Targets ``(2K, C, H, W)`` on the layer's grid (rows ``0..K-1`` the + part, ``K..2K-1``
    the - part, by ``match``), their crop bounds (None without cropping), the layer's spatial
    view, and per image ``(K,)`` the attribution energies of the grid and of the non-patch
    tokens (``prefix_*``, zero where the layer has none)."""

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
    match: str = "signed_attribution",
) -> InversionTargets:
    """The +/- targets of ``images`` (one per feature of ``readout``) at ``layer``, by
    ``match`` (see the module's text)."""
    if match not in INVERSION_MATCHES:
        raise MTIConfigError(f"inversion match {match!r}; valid: {', '.join(INVERSION_MATCHES)}")
    x = resize(images, lm.input_size[1:])
    found = attribute(lm, x, readout, [layer])
    raw = found.maps[layer]
    view = spatial_view(lm.model, lm.input_size, layer, tuple(raw.shape[1:]))
    attr = view.require_grid("spatial map to invert").to_grid(raw)
    targets = torch.cat([attr.clamp_min(0), (-attr).clamp_min(0)])
    if match == "signed_attribution":
        targets = targets * view.to_grid(found.layer_acts[layer]).sign().repeat(2, 1, 1, 1)
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
    match: str = "signed_attribution",
) -> SpatialChannelCosine:
    """The objective of a batch of ``2K`` images inverting the +/- parts of ``K`` images."""
    t = inversion_targets(lm, images, readout, layer, crop, match)
    return SpatialChannelCosine(layer, t.targets, t.bounds, power, t.view)
