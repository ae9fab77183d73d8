"""One optimisation step's forward, and a plain loop for scripts that need no Trainer.

``evaluate`` is the shared hot path: images -> batched draws -> normalise -> forward stopped at
the deepest layer the objective (or the readout, when given) reads -> feature values. The
Lightning search calls it each step; pass ``readout=None`` when no feature value is needed.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn

from mti_lightning.core.features import Readout
from mti_lightning.core.heap import keep_freed_memory
from mti_lightning.core.models import LoadedModel
from mti_lightning.core.objectives import Evaluation, Objective
from mti_lightning.core.probes import capture
from mti_lightning.core.transforms import TransformConfig, apply_draws, sample_draws, sample_noise


def evaluate(
    lm: LoadedModel,
    images: torch.Tensor,
    objective: Objective,
    readout: Readout | None,
    draws: torch.Tensor,
    transform: TransformConfig,
    noise: torch.Tensor | None = None,
) -> Evaluation:
    """Forward ``K`` canvases x ``D`` draws and collect what ``objective`` needs."""
    x = apply_draws(images, draws, lm.input_size[1:], transform, noise)
    layers = set(objective.layers())
    if readout is not None:
        layers |= set(readout.layers)
    acts = capture(lm.model, lm.normalize(x), sorted(layers))
    n_draws = draws.shape[0]
    values = (
        readout(acts, n_draws) if readout is not None else x.new_zeros(images.shape[0], n_draws)
    )
    return Evaluation(acts=acts, values=values, images=images)


@dataclass
class RenderResult:
    images: torch.Tensor
    losses: list[float]


def render(
    lm: LoadedModel,
    param: nn.Module,
    objective: Objective,
    readout: Readout | None,
    steps: int = 128,
    lr: float = 0.05,
    n_draws: int = 8,
    transform: TransformConfig | None = None,
    seed: int = 0,
    callback: Callable[[int, torch.Tensor], None] | None = None,
) -> RenderResult:
    """Optimise ``param``'s images for ``objective`` with Adam (no Lightning)."""
    transform = transform or TransformConfig()
    gen = torch.Generator().manual_seed(seed)
    opt = torch.optim.Adam(param.parameters(), lr=lr)
    device = next(param.parameters()).device
    losses = []
    size = lm.input_size[1:]
    with keep_freed_memory(device.type == "cpu"):
        for step in range(steps):
            draws = sample_draws(transform, n_draws, gen).to(device)
            images = param()
            noise = sample_noise(transform, n_draws, size, seed * 100_003 + step, device)
            ev = evaluate(lm, images, objective, readout, draws, transform, noise)
            loss = -objective.score(ev).sum()
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            losses.append(loss.detach())
            if callback is not None:
                callback(step, images.detach())
    with torch.no_grad():
        images = param()
    return RenderResult(images=images, losses=[float(v) for v in losses])
