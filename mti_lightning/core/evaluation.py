"""One optimisation step's forward, shared by every search the engine runs.

``evaluate``: images -> batched draws -> normalise -> forward stopped at the deepest layer the
objective (or the readout, when given) reads -> feature values. Pass ``readout=None`` when no
feature value is needed (an inversion). Input vectors ``(K, N)`` (a toy model's inputs) take
no transforms and no normalisation: one evaluation each.
"""

from __future__ import annotations

import torch

from mti_lightning.core.features import Readout
from mti_lightning.core.models import LoadedModel
from mti_lightning.core.objectives import Evaluation, Objective
from mti_lightning.core.probes import capture
from mti_lightning.core.transforms import TransformConfig, apply_draws


def evaluate(
    lm: LoadedModel,
    images: torch.Tensor,
    objective: Objective,
    readout: Readout | None,
    draws: torch.Tensor,
    transform: TransformConfig,
    noise: torch.Tensor | None = None,
) -> Evaluation:
    """Forward ``K`` canvases x ``D`` draws (or ``K`` input vectors) and collect what
    ``objective`` needs."""
    if images.dim() == 4:
        x = lm.normalize(apply_draws(images, draws, lm.input_size[1:], transform, noise))
        n_draws = draws.shape[0]
    else:
        x, n_draws = images, 1
    layers = set(objective.layers())
    if readout is not None:
        layers |= set(readout.layers)
    acts = capture(lm.model, x, sorted(layers))
    values = (
        readout(acts, n_draws) if readout is not None else x.new_zeros(images.shape[0], n_draws)
    )
    return Evaluation(acts=acts, values=values, images=images)
