"""Energies of many units of one layer per image, from one forward and one batched backward.

Where the path from the attribution layer to the units is not one convolution (deeper paths,
transformer tokens), each unit's attribution ``a * d f_k / d a`` still needs its own gradient;
``torch.autograd.grad(..., is_grads_batched=True)`` computes the gradients of all ``K`` units
in one vectorised backward (a ``vmap`` over the one-hot output gradients), never a Python loop
of one backward per unit. The units are read at one position: ``center`` (the centre of a map, or of a
token layer's patch grid: ``core.token_grid``), ``mean`` (over positions or all tokens) or ``max`` (each image's own largest value of the unit, its argmax taken as
fixed), the same reading a ``LAYER:UNIT@center`` feature spec makes.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from mti_lightning.core.attribution import energies
from mti_lightning.core.errors import MTIConfigError
from mti_lightning.core.models import LoadedModel
from mti_lightning.core.probes import capture
from mti_lightning.core.token_grid import SpatialView, spatial_view

POSITIONS = ("center", "mean", "max")


def unit_values(
    value: torch.Tensor, channels: torch.Tensor, position: str, view: SpatialView | None = None
) -> torch.Tensor:
    """``(B, K)`` values of ``channels`` of a layer value (maps ``(B, C, H, W)``, tokens
    ``(B, N, C)`` or vectors ``(B, C)``) at ``position``; ``view``: the layer's spatial view,
    which turns channels-last maps, and token layers read at their centre, into the patch
    grid first."""
    if position not in POSITIONS:
        raise MTIConfigError(f"position {position!r}; valid: {', '.join(POSITIONS)}")
    if view is not None and view.grid is not None:
        if view.layout != "tokens" or position == "center":
            value = view.to_grid(value)  # (mean and max over tokens read every token, as specs)
    if value.dim() == 2:
        return value[:, channels]
    if value.dim() == 4:
        sel = value[:, channels].flatten(2)  # (B, K, H*W)
        if position == "center":
            h, w = value.shape[2:]
            return sel[:, :, (h // 2) * w + w // 2]
    elif value.dim() == 3:
        sel = value[:, :, channels].transpose(1, 2)  # (B, K, N)
        if position == "center":
            reason = view.reason if view is not None else "its tokens form no known grid"
            raise MTIConfigError(
                f"position 'center' needs a spatial grid; the layer's tokens have none "
                f"({reason}); use position mean or max"
            )
    else:
        raise MTIConfigError(f"layer value of shape {tuple(value.shape[1:])}; need maps or tokens")
    if position == "mean":
        return sel.mean(2)
    index = sel.detach().argmax(2, keepdim=True)
    return sel.gather(2, index)[:, :, 0]


def unit_energies(
    lm: LoadedModel,
    images: torch.Tensor,
    unit_layer: str,
    channels: Sequence[int] | torch.Tensor,
    attr_layer: str,
    position: str = "center",
    units_per_backward: int = 64,
) -> dict[str, torch.Tensor]:
    """``e_plus``, ``e_minus``, ``e_plus_l2``, ``e_minus_l2`` and ``activation``, each
    ``(B, K)``, of units ``channels`` of ``unit_layer`` at ``position`` with attribution at
    ``attr_layer``; ``images`` in [0, 1]. ``units_per_backward`` units share one batched
    backward (its memory is that many attribution maps per image)."""
    device = images.device
    channels = torch.as_tensor(channels, dtype=torch.int64, device=device)
    with torch.enable_grad():
        x = lm.normalize(images.detach().requires_grad_(True))
        acts = capture(lm.model, x, [attr_layer, unit_layer])
        a = acts[attr_layer]
        value = acts[unit_layer]
        view = spatial_view(lm.model, lm.input_size, unit_layer, value.shape[1:])
        values = unit_values(value, channels, position, view)  # (B, K)
        b, k = values.shape
        keys = ("e_plus", "e_minus", "e_plus_l2", "e_minus_l2")
        parts: dict[str, list[torch.Tensor]] = {key: [] for key in keys}
        for start in range(0, k, units_per_backward):
            n = min(units_per_backward, k - start)
            onehot = torch.zeros(n, b, k, device=device, dtype=values.dtype)
            onehot[torch.arange(n), :, start + torch.arange(n)] = 1.0
            (grads,) = torch.autograd.grad(
                values, a, grad_outputs=onehot, is_grads_batched=True, retain_graph=True
            )
            if grads is None:
                raise MTIConfigError(
                    f"attribution layer {attr_layer!r} does not lie upstream of {unit_layer!r}; "
                    "choose an earlier layer"
                )
            attr = (a.detach().unsqueeze(0) * grads).flatten(0, 1)  # (n * B, ...)
            found = energies(attr).as_dict()
            for key in keys:
                parts[key].append(found[key].view(n, b).T)
    out = {key: torch.cat(v, 1) for key, v in parts.items()}
    out["activation"] = values.detach().float()
    return out
