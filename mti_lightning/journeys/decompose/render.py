"""An image per NMF component, rendered by the engine: the cosine-direction objective at the
attribution layer (``dot * cos**power`` of the layer's channel vector with the component's
channel weights, averaged over positions), one batched ``MTISearch`` seeded like every search."""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path

import torch
import torch.nn.functional as F

from mti_lightning.core.config_schema import MTIConfig
from mti_lightning.core.models import LoadedModel
from mti_lightning.core.objectives import CosineDirection
from mti_lightning.core.parameterizations import make_parameterization
from mti_lightning.core.probes import capture
from mti_lightning.core.token_grid import spatial_view
from mti_lightning.core.transforms import TransformConfig, resize
from mti_lightning.shells.callbacks import NonFiniteGuard
from mti_lightning.shells.engine import EngineOptions, optimise
from mti_lightning.shells.search import MTISearch


def render_components(
    cfg: MTIConfig,
    lm: LoadedModel,
    layer: str,
    shape: tuple[int, ...],
    directions: torch.Tensor,
    work_dir: Path,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Images ``(K, 3, H, W)`` in [0, 1] matching ``directions`` ``(K, C)`` at ``layer``, and
    the cosine of each image's position-summed activation there with its direction."""
    d = cfg.decompose
    view = spatial_view(lm.model, lm.input_size, layer, shape)
    objective = CosineDirection(layer, directions, d.render_power, view)
    p = cfg.param
    size = tuple(p.canvas or lm.input_size[1:])
    extra = {k: v for k, v in (("decay", p.decay), ("scale", p.scale)) if v is not None}
    param = make_parameterization(p.kind, directions.shape[0], size, seed=cfg.seed, **extra)
    search = MTISearch(
        lm,
        param,
        objective,
        None,
        TransformConfig(**asdict(cfg.transform)),
        lr=d.render_lr,
        fast_net=cfg.trainer.fast_net,
    )
    options = EngineOptions(
        accelerator=cfg.trainer.accelerator, precision=str(cfg.trainer.precision)
    )
    guard = NonFiniteGuard(cfg.callbacks.check_every)
    optimise(search, d.render_steps, d.render_draws, cfg.seed, work_dir, options, False, [guard])
    images = search().detach().float()
    with torch.no_grad():
        x = lm.normalize(resize(images, lm.input_size[1:]))
        value = capture(lm.model, x, [layer])[layer]
        act = view.to_grid(value).sum((2, 3)) if view.grid is not None else value.flatten(1)
    cos = F.cosine_similarity(act.float().cpu(), directions.float().cpu(), dim=1)
    return images.cpu(), cos
