"""Orientation tuning of every unit of a compared layer: each channel of the layer, read at
the comparison's position on single-arc curve images, through the world's one tuning function
(:func:`~mti_lightning.world.tuning.orientation_tuning`, as in the CurveNet report).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from mti_lightning.core.features import FeatureSpec, readout_weight
from mti_lightning.core.probes import capture, layer_shapes
from mti_lightning.journeys.compare.plan import Plan
from mti_lightning.world.curve_dataset import CurveDataset, RenderedCurveDataset
from mti_lightning.world.inhibition_tuning import InhibitionMeasures, measure_units
from mti_lightning.world.tuning import TUNED_R2, Tuning, orientation_tuning

__all__ = [
    "TUNED_R2",
    "Tuning",
    "channel_values",
    "tuning_images",
    "unit_inhibition",
    "unit_tuning",
]


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


def unit_tuning(plan: Plan, images: torch.Tensor, labels: torch.Tensor) -> Tuning:
    """Orientation tuning of every channel of the plan's layer."""
    return orientation_tuning(channel_values(plan, images), labels)


def unit_inhibition(
    plan: Plan,
    tuning: Tuning,
    images: torch.Tensor,
    labels: torch.Tensor,
    backgrounds: torch.Tensor,
    batch: int = 64,
) -> dict[int, InhibitionMeasures]:
    """Inhibition measured as inhibition (``world/inhibition_tuning.py``) for each measured
    unit that is orientation tuned, with attribution at the plan's attribution layer."""
    units = [u for u in plan.units if bool(tuning.tuned[u])]
    if not units or len(images) == 0:
        return {}
    specs = [FeatureSpec(plan.layer, u, plan.position) for u in units]
    got = measure_units(
        plan.lm, specs, plan.attribution_layer, images, labels, backgrounds, batch
    )
    return dict(zip(units, got.measures))
