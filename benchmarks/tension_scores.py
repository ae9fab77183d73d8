"""Tension and inversion scores of final images for one unit, on a code path of their own:
plain autograd through forward hooks, never the engine's attribution, readouts or closed form
(a shared bug would then score itself).

The attribution of unit ``f`` at layer ``L`` is ``A = act_L * d f / d act_L``; its tension is
``min(sum relu(A), sum relu(-A))``. An inversion is scored by the unit's value on it against
its value on a grey image (+ should raise it, - lower it) and by the cosine of its own
attribution map with the part it inverts (``relu(A)`` for +, ``-relu(-A)`` for -): over the
whole ``(C, H, W)`` map (``cos_*``) and over the spatial map, the sum over channels a heatmap
shows (``spatial_cos_*``). Beside them, ``source_cos_*``: the same cosines of the source
image's own ``A`` with its parts, what an "inversion" that returned the image would score.
"""

from __future__ import annotations

import torch
from torch import nn

from benchmarks.quality_scores import Normalize, Unit, read_unit, unit_values


def attribution(
    model: nn.Module, normalize: Normalize, unit: Unit, layer: str, images: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """The unit's values ``(B,)`` on ``images`` ``(B, 3, H, W)`` in [0, 1] and its attribution
    maps ``(B, ...)`` at ``layer`` (a module name; ``NAME:in`` for the module's input)."""
    name, _, port = layer.partition(":")
    modules = dict(model.named_modules())
    seen: dict[str, torch.Tensor] = {}

    def keep_in(_m: nn.Module, args: tuple) -> None:
        seen["a"] = args[0]

    def keep(key: str):
        def hook(_m: nn.Module, _i: tuple, out: torch.Tensor) -> None:
            seen[key] = out

        return hook

    handles = [
        modules[name].register_forward_pre_hook(keep_in)
        if port == "in"
        else modules[name].register_forward_hook(keep("a")),
        modules[unit.layer].register_forward_hook(keep("unit")),
    ]
    try:
        with torch.enable_grad():
            model(normalize(images.detach().requires_grad_(True)))  # frozen weights too
            values = read_unit(seen["unit"], unit)
            (grad,) = torch.autograd.grad(values.sum(), seen["a"])  # images are independent
    finally:
        for h in handles:
            h.remove()
    return values.detach(), (seen["a"] * grad).detach()


def energies(maps: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``(E+, E-)`` per map of ``maps`` ``(B, ...)``: the sums of ``relu(A)`` and ``relu(-A)``."""
    flat = maps.flatten(1)
    return flat.clamp_min(0).sum(1), (-flat).clamp_min(0).sum(1)


def tension(maps: torch.Tensor) -> torch.Tensor:
    """``min(E+, E-)`` per map of ``maps`` ``(B, ...)``."""
    e_plus, e_minus = energies(maps)
    return torch.minimum(e_plus, e_minus)


def cosine(a: torch.Tensor, b: torch.Tensor) -> float:
    """Cosine of two maps of any shape (0 where either is all zero)."""
    a, b = a.flatten().double(), b.flatten().double()
    norm = float(a.norm() * b.norm())
    return float(a @ b) / norm if norm > 0 else 0.0


def spatial(maps: torch.Tensor) -> torch.Tensor:
    """The spatial heatmap of attribution maps ``(..., C, H, W)``: their sum over channels
    (maps of another shape, a token layer's, are returned as they are)."""
    return maps.sum(-3) if maps.dim() >= 3 else maps


def inversion_scores(
    model: nn.Module,
    normalize: Normalize,
    unit: Unit,
    layer: str,
    image: torch.Tensor,
    plus: torch.Tensor,
    minus: torch.Tensor,
) -> dict[str, float]:
    """The +/- inversions ``plus`` and ``minus`` ``(3, H, W)`` of ``image`` for ``unit`` with
    attribution at ``layer``: the unit on a grey image, on each inversion, whether + raises and
    - lowers it from grey, and the cosine of each inversion's attribution with its part."""
    grey = torch.full_like(image, 0.5)
    grey_value = float(unit_values(model, normalize, unit, grey[None])[0])
    _, maps = attribution(model, normalize, unit, layer, torch.stack([image, plus, minus]))
    target, got_plus, got_minus = maps
    parts = (target.clamp_min(0), -(-target).clamp_min(0))
    value_plus, value_minus = unit_values(model, normalize, unit, torch.stack([plus, minus]))
    return {
        "grey": grey_value,
        "plus_value": float(value_plus),
        "minus_value": float(value_minus),
        "plus_raises": float(value_plus) > grey_value,
        "minus_lowers": float(value_minus) < grey_value,
        "cos_plus": cosine(got_plus, parts[0]),
        "cos_minus": cosine(got_minus, parts[1]),
        "spatial_cos_plus": cosine(spatial(got_plus), spatial(parts[0])),
        "spatial_cos_minus": cosine(spatial(got_minus), spatial(parts[1])),
        "source_cos_plus": cosine(target, parts[0]),
        "source_cos_minus": cosine(target, parts[1]),
    }
