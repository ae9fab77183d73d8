"""Orientation tuning of every unit of a compared layer, as in the CurveNet report.

Per channel of the layer (read at the comparison's position): the mean value per orientation
class over single-arc curve images (the tuning curve), the share of its variance orientation
explains (R2, :func:`~mti_lightning.world.curvenet_report.tuning_strength`), the preferred
orientation (the curve's maximum) and where the strongest inhibition lies (its minimum), as an
offset from the preference in degrees (0 to 90, orientations being modulo 180).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from mti_lightning.compare.plan import Plan
from mti_lightning.core.features import FeatureSpec, readout_weight
from mti_lightning.core.probes import capture, layer_shapes
from mti_lightning.world.curve_dataset import CurveDataset, RenderedCurveDataset
from mti_lightning.world.curvenet_report import tuning_strength, tuning_table
from mti_lightning.world.curves import ORIENTATIONS_DEG

TUNED_R2 = 0.2  # a unit is orientation tuned when orientation explains > 20% of its variance


@dataclass
class Tuning:
    """Tuning of all ``C`` channels of one layer: curves ``(C, 8)``, R2, preference, offset."""

    curves: torch.Tensor
    r2: torch.Tensor
    preferred_deg: torch.Tensor
    inhibition_deg: torch.Tensor
    offset_deg: torch.Tensor

    @property
    def tuned(self) -> torch.Tensor:
        """Mask of the orientation-tuned channels (R2 > ``TUNED_R2``)."""
        return self.r2 > TUNED_R2


def tuning_images(n: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``n`` single-arc curve images (seed stream ``seed``) and their orientation labels."""
    rendered = RenderedCurveDataset(CurveDataset(n, seed), num_workers=0)
    return rendered.images.float() / 255, rendered.labels


def channel_values(plan: Plan, images: torch.Tensor, batch: int = 256) -> torch.Tensor:
    """Every channel of ``plan.layer`` at ``plan.position`` for each image: ``(N, C)``."""
    lm = plan.lm
    shape = layer_shapes(lm.model, lm.input_size, [plan.layer])[plan.layer]
    w = readout_weight(FeatureSpec(plan.layer, 0, plan.position), shape)
    device = next(lm.model.parameters()).device
    out = []
    with torch.no_grad():
        for start in range(0, len(images), batch):
            x = images[start : start + batch].to(device)
            if tuple(x.shape[-2:]) != tuple(lm.input_size[1:]):
                x = F.interpolate(x, size=lm.input_size[1:], mode="bilinear", antialias=True)
            act = capture(lm.model, lm.normalize(x), [plan.layer])[plan.layer].float()
            if act.dim() == 4:
                out.append(torch.einsum("bchw,hw->bc", act, w[0].to(act)))
            elif act.dim() == 3:
                out.append(torch.einsum("btc,t->bc", act, w[:, 0].to(act)))
            else:
                out.append(act.flatten(1))
    return torch.cat(out).cpu()


def offset_deg(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Angle between orientations ``a`` and ``b`` (degrees, modulo 180): 0 to 90."""
    d = (a - b).abs() % 180
    return torch.minimum(d, 180 - d)


def unit_tuning(plan: Plan, images: torch.Tensor, labels: torch.Tensor) -> Tuning:
    """Orientation tuning of every channel of the plan's layer."""
    values = channel_values(plan, images)
    curves = tuning_table(values, labels)
    r2 = tuning_strength(curves, values, labels)
    degrees = torch.tensor(ORIENTATIONS_DEG)
    pref, worst = degrees[curves.argmax(1)], degrees[curves.argmin(1)]
    return Tuning(curves, r2, pref, worst, offset_deg(pref, worst))
