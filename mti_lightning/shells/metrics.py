"""Per-image feature metrics as a torchmetrics ``Metric``, so they reduce across processes."""

from __future__ import annotations

import torch
from torchmetrics import Metric

from mti_lightning.core.attribution import tension_ratio


class FeatureEnergies(Metric):
    """Mean activation, ``E+``, ``E-``, tension and tension ratio of each of K images.

    States are per-image sums and a count, reduced by sum across processes, so the result is
    the mean over every evaluation on every process.
    """

    full_state_update = False

    def __init__(self, n_images: int):
        super().__init__()
        for name in ("activation", "e_plus", "e_minus", "tension", "tension_ratio"):
            self.add_state(name, default=torch.zeros(n_images), dist_reduce_fx="sum")
        self.add_state("count", default=torch.zeros(()), dist_reduce_fx="sum")

    def update(self, activation: torch.Tensor, e_plus: torch.Tensor, e_minus: torch.Tensor) -> None:
        """Add evaluations ``(K,)`` or ``(K, D)``."""
        a, p, m = (
            t.detach().float().reshape(t.shape[0], -1) for t in (activation, e_plus, e_minus)
        )
        self.activation += a.sum(1)
        self.e_plus += p.sum(1)
        self.e_minus += m.sum(1)
        self.tension += torch.minimum(p, m).sum(1)
        self.tension_ratio += tension_ratio(p, m).sum(1)
        self.count += a.shape[1]

    def compute(self) -> dict[str, torch.Tensor]:
        n = self.count.clamp_min(1)
        return {
            "activation": self.activation / n,
            "e_plus": self.e_plus / n,
            "e_minus": self.e_minus / n,
            "tension": self.tension / n,
            "tension_ratio": self.tension_ratio / n,
        }
