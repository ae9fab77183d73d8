"""What a census measures, checked before any work: the layers (by name, relative depth or
``all``), each layer's units and attribution layer, whether one convolution joins them (the
closed form) or not (a batched backward), and the pieces ``(layer, unit chunk)`` that the
jobs share out.

Every bad input is one MTIConfigError here: an unknown layer (with the closest names), a depth
outside (0, 1], a layer without channels, a unit sample larger than its layer.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from mti_lightning.core.config_schema import CensusSchema
from mti_lightning.core.conv_energy import ConvPath, one_conv_path
from mti_lightning.core.errors import MTIConfigError
from mti_lightning.core.layer_choice import (
    Survey,
    attribution_layer_for,
    check_depth,
    layer_at_depth,
    relative_depth,
    survey,
)
from mti_lightning.core.models import LoadedModel
from mti_lightning.core.probes import LayerRef, capture, resolve_module
from mti_lightning.core.token_grid import spatial_view


@dataclass(frozen=True)
class LayerPlan:
    """One census layer: its name, relative depth, attribution layer, channel count, the
    channels measured, and the one convolution between the two layers (None: batched)."""

    name: str
    depth: float
    attr_layer: str
    n_channels: int
    channels: tuple[int, ...]
    path: ConvPath | None

    def record(self) -> dict:
        """The layer's entry in ``units.json``."""
        return {
            "name": self.name,
            "depth": self.depth,
            "attr_layer": self.attr_layer,
            "n_units": len(self.channels),
            "n_channels": self.n_channels,
            "closed_form": self.path is not None,
        }


@dataclass(frozen=True)
class Piece:
    """Units ``channels`` of layer ``layer``: one share of the work (``key`` names its
    results in the shards)."""

    key: str
    layer: str
    channels: tuple[int, ...]


def _layer_names(entries: list, s: Survey, lm: LoadedModel) -> list[str]:
    """Layer names from names, depths and ``all``, in forward order, each once."""
    names: list[str] = []
    for entry in entries:
        if isinstance(entry, str) and entry == "all":
            if not s.targets:
                raise MTIConfigError(
                    f"model {lm.name}: census.layers=[all] needs blocks or activation modules "
                    "to find the layers; give the layers by name"
                )
            names.extend(s.targets)
        elif isinstance(entry, (int, float)) and not isinstance(entry, bool):
            names.append(layer_at_depth(s, check_depth(entry), lm.name))
        else:
            name = str(entry)
            resolve_module(lm.model, LayerRef.parse(name))
            names.append(name)
    names = list(dict.fromkeys(names))
    missing = [n for n in names if str(LayerRef.parse(n)) not in s.order]
    if missing:
        raise MTIConfigError(
            f"layer(s) {missing} are never reached by {lm.name}'s forward; choose modules the "
            "forward calls on the image"
        )
    return sorted(names, key=lambda n: s.order.index(str(LayerRef.parse(n))))


def _channel_count(lm: LoadedModel, shape: tuple[int, ...], name: str) -> int:
    """The layer's channel count, read through its spatial view (a Swin stage is
    channels-last ``(H, W, C)``)."""
    channels = (
        spatial_view(lm.model, lm.input_size, name, shape).channels
        if len(shape) in (1, 2, 3)
        else 0
    )
    if channels == 0:
        raise MTIConfigError(
            f"layer {name!r} has value shape {shape}: no channels to take a census of; "
            "choose a layer with maps (C, H, W), tokens (N, C) or a vector (C,)"
        )
    return channels


def _channels(n: int, units: object, seed: int, index: int, name: str) -> tuple[int, ...]:
    if units == "all":
        return tuple(range(n))
    count = int(units)  # checked by the config: all or a count >= 1
    if count > n:
        raise MTIConfigError(
            f"census.units={count} is larger than layer {name!r}'s {n} channels; give at most "
            f"{n} or all"
        )
    gen = torch.Generator().manual_seed(seed + index)
    return tuple(sorted(torch.randperm(n, generator=gen)[:count].tolist()))


def plan_layers(cfg: CensusSchema, lm: LoadedModel) -> list[LayerPlan]:
    """Resolve and check the census's layers, units and attribution layers for ``lm``."""
    s = survey(lm.model, lm.input_size)
    names = _layer_names(list(cfg.layers), s, lm)
    device = next(iter(lm.model.parameters()), torch.zeros(0)).device
    gen = torch.Generator().manual_seed(0)
    example = lm.normalize(torch.rand(2, *lm.input_size, generator=gen).to(device))
    explicit = cfg.attribution_layer if cfg.attribution_layer != "auto" else None
    plans = []
    for index, name in enumerate(names):
        n = _channel_count(lm, s.shapes[str(LayerRef.parse(name))], name)
        path = one_conv_path(lm.model, name, example, explicit)
        if path is not None:
            attr = path.attr_layer
        elif explicit is not None:
            attr = explicit
        else:
            attr = attribution_layer_for(s, [name], lm.name)
        if path is None:  # the batched path: the attribution layer must lie upstream
            with torch.no_grad():
                capture(lm.model, example, [attr, name])
            if s.order.index(str(LayerRef.parse(attr))) >= s.order.index(str(LayerRef.parse(name))):
                raise MTIConfigError(
                    f"attribution layer {attr!r} does not lie upstream of census layer {name!r}; "
                    "choose an earlier census.attribution_layer (or auto)"
                )
        depth = relative_depth(s, name)
        plans.append(
            LayerPlan(
                name,
                float(depth if depth is not None else (index + 1) / len(names)),
                attr,
                n,
                _channels(n, cfg.units, cfg.unit_seed, index, name),
                path,
            )
        )
    return plans


def pieces(plans: list[LayerPlan], unit_chunk: int) -> list[Piece]:
    """Each layer's units cut into chunks of ``unit_chunk`` (0: the whole layer)."""
    out = []
    for li, plan in enumerate(plans):
        size = unit_chunk or len(plan.channels)
        for start in range(0, len(plan.channels), size):
            out.append(Piece(f"L{li}U{start}", plan.name, plan.channels[start : start + size]))
    return out


def job_pieces(all_pieces: list[Piece], job: int, jobs: int) -> list[Piece]:
    """The pieces of job ``job`` of ``jobs`` (dealt round-robin, so jobs share every layer)."""
    return all_pieces[job::jobs]
