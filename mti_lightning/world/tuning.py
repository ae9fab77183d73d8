"""Orientation tuning, the one function for every report on the curves world (the CurveNet
report, the architecture comparison).

Per channel: the mean value per orientation class over single-arc curve images (the tuning
curve), the share of its variance that orientation explains (R2), the preferred orientation
(the curve's maximum) and where the strongest inhibition lies (its minimum), as an offset from
the preference in degrees (0 to 90, orientations being modulo 180). A channel is orientation
tuned when R2 exceeds ``TUNED_R2``.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from mti_lightning.world.curves import NUM_CLASSES, ORIENTATIONS_DEG

TUNED_R2 = 0.2  # a unit is orientation tuned when orientation explains > 20% of its variance


@dataclass
class Tuning:
    """Tuning of ``C`` channels: curves ``(C, 8)``, R2, preference, inhibition, their offset."""

    curves: torch.Tensor
    r2: torch.Tensor
    preferred_deg: torch.Tensor
    inhibition_deg: torch.Tensor
    offset_deg: torch.Tensor

    @property
    def tuned(self) -> torch.Tensor:
        """Mask of the orientation-tuned channels (R2 > ``TUNED_R2``)."""
        return self.r2 > TUNED_R2


def tuning_table(values: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Mean value per orientation class ``(C, 8)`` of values ``(N, C)``."""
    return torch.stack([values[labels == k].mean(0) for k in range(NUM_CLASSES)], 1)


def tuning_strength(
    curves: torch.Tensor, values: torch.Tensor, labels: torch.Tensor
) -> torch.Tensor:
    """Fraction of each channel's variance explained by orientation (per channel)."""
    explained = curves[:, labels].t()
    return 1 - (values - explained).var(0) / values.var(0).clamp_min(1e-12)


def offset_deg(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Angle between orientations ``a`` and ``b`` (degrees, modulo 180): 0 to 90."""
    d = (a - b).abs() % 180
    return torch.minimum(d, 180 - d)


def orientation_tuning(values: torch.Tensor, labels: torch.Tensor) -> Tuning:
    """Orientation tuning of every channel from its values ``(N, C)`` on images of
    orientation classes ``labels`` ``(N,)``."""
    curves = tuning_table(values, labels)
    r2 = tuning_strength(curves, values, labels)
    degrees = torch.tensor(ORIENTATIONS_DEG)
    pref, worst = degrees[curves.argmax(1)], degrees[curves.argmin(1)]
    return Tuning(curves, r2, pref, worst, offset_deg(pref, worst))
