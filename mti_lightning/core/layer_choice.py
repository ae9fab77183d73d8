"""Layers chosen by relative depth, attribution layers chosen automatically, positions by shape.

One config must cover CNNs and ViTs, whose layer names differ. A model's *blocks* are the
children of its ``blocks`` / ``stages`` / ``layers`` / ``layerN`` containers (descending into a
stage's own ``blocks``), in order: ``layer3.1`` in a ResNet, ``blocks.6`` in a ViT,
``stages.2.blocks.0`` in a ConvNeXt. A model without such containers (CurveNet) has its
activation modules as blocks, in forward order. ``depth`` in (0, 1] picks the block at that
fraction of the list (0.5: the block at half depth, 1.0: the last one).

The feature read off a block is its pre-activation where the block's output is an activation
module's output (``layer3.1.act2:in``: a ResNet block's ReLU input, after the residual sum),
else the block's output (``blocks.6``: a ViT's residual stream). The automatic attribution
layer is the nearest block boundary upstream of the target: the input of the block holding it
(``layer3.1:in``, ``blocks.6:in``), or for activation blocks the previous activation's output.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from mti_lightning.core.attribution import attribute
from mti_lightning.core.errors import MTIConfigError
from mti_lightning.core.features import FeatureSpec, Readout
from mti_lightning.core.models import LoadedModel
from mti_lightning.core.probes import LayerRef, resolve_module
from mti_lightning.core.targets import parse_targets

_CONTAINER = re.compile(r"^(blocks|stages|layers|layer\d+)$")
_ACTIVATIONS = {
    "ReLU",
    "ReLU6",
    "LeakyReLU",
    "GELU",
    "GELUTanh",
    "QuickGELU",
    "SiLU",
    "Swish",
    "Mish",
    "Hardswish",
    "HardSwish",
    "ELU",
    "CELU",
    "SELU",
}


@dataclass(frozen=True)
class Survey:
    """What one probe forward tells about a model's layers.

    ``order``: layer names (``NAME:in`` when a module starts, ``NAME`` when it ends) in forward
    order; ``blocks``: block names; ``targets``: the feature layer of each block;
    ``attribution_points``: the layers an automatic attribution layer may be;
    ``shapes``: value shape (no batch) of each layer in ``order``; ``has_cls``: the model
    prepends a class token.
    """

    order: tuple[str, ...]
    blocks: tuple[str, ...]
    targets: tuple[str, ...]
    attribution_points: tuple[str, ...]
    shapes: dict[str, tuple[int, ...]]
    has_cls: bool


def _container_blocks(module: nn.Module, prefix: str = "") -> list[str]:
    """Children of block containers, descending into a child's own containers."""
    out: list[str] = []
    for name, child in module.named_children():
        if not _CONTAINER.match(name) or not list(child.children()):
            continue
        for sub, block in child.named_children():
            full = f"{prefix}{name}.{sub}"
            out.extend(_container_blocks(block, f"{full}.") or [full])
    return out


def _first_tensor(value: Any) -> torch.Tensor | None:
    if isinstance(value, torch.Tensor):
        return value
    if isinstance(value, (tuple, list)) and value and isinstance(value[0], torch.Tensor):
        return value[0]
    return None


def survey(model: nn.Module, input_size: Sequence[int]) -> Survey:
    """Blocks, their feature layers and the forward order of every layer, from one forward."""
    modules = {n: m for n, m in model.named_modules() if n}
    activations = [n for n, m in modules.items() if type(m).__name__ in _ACTIVATIONS]
    order: list[str] = []
    shapes: dict[str, tuple[int, ...]] = {}
    outputs: dict[str, torch.Tensor] = {}

    def record(name: str, value: Any) -> None:
        t = _first_tensor(value)
        if name not in shapes and t is not None:
            order.append(name)
            shapes[name] = tuple(t.shape[1:])

    handles = []
    for name, module in modules.items():
        handles.append(module.register_forward_pre_hook(lambda _m, a, n=name: record(f"{n}:in", a)))

        def post(_m, _a, out, n=name):
            record(n, out)
            outputs.setdefault(n, _first_tensor(out))

        handles.append(module.register_forward_hook(post))
    p = next(iter(model.parameters()), None)
    device = p.device if p is not None else torch.device("cpu")
    try:
        with torch.no_grad():
            model(torch.zeros(1, *input_size, device=device))
    finally:
        for h in handles:
            h.remove()
    blocks = [b for b in _container_blocks(model) if b in shapes]
    if blocks:
        targets = [_block_target(b, activations, outputs) for b in blocks]
        points = [p for b in blocks for p in (f"{b}:in", b)]
    else:
        blocks = [a for a in activations if a in shapes]
        blocks.sort(key=order.index)
        targets = [f"{a}:in" for a in blocks]
        points = list(blocks)
    has_cls = getattr(model, "cls_token", None) is not None  # timm ViTs; register tokens aside
    return Survey(tuple(order), tuple(blocks), tuple(targets), tuple(points), shapes, has_cls)


def _block_target(block: str, activations: list[str], outputs: dict[str, torch.Tensor]) -> str:
    """``ACT:in`` when the block returns the output of its activation ``ACT``, else the block."""
    out = outputs.get(block)
    for act in activations:
        if act.startswith(f"{block}.") and outputs.get(act) is out and out is not None:
            return f"{act}:in"
    return block


def _no_blocks_error(name: str) -> MTIConfigError:
    return MTIConfigError(
        f"model {name}: cannot choose layers by depth or automatically: it has no "
        "blocks/stages/layers containers and no activation modules; give the layer by name "
        "(target.layer, search.attribution_layer)"
    )


def check_depth(depth: Any) -> float:
    """``depth`` as a float in (0, 1], or a clear error."""
    try:
        value = float(depth)
    except (TypeError, ValueError) as err:
        raise MTIConfigError(f"depth {depth!r} is not a number; valid: (0, 1]") from err
    if not 0.0 < value <= 1.0:
        raise MTIConfigError(
            f"depth={depth} outside (0, 1]; valid: a fraction of the model's depth, "
            "e.g. 0.5 (the block at half depth) or 1.0 (the last block)"
        )
    return value


def layer_at_depth(s: Survey, depth: float, model_name: str = "model") -> str:
    """The feature layer of the block at relative ``depth`` in (0, 1]."""
    depth = check_depth(depth)
    if not s.blocks:
        raise _no_blocks_error(model_name)
    index = max(0, math.ceil(depth * len(s.blocks) - 1e-9) - 1)
    return s.targets[index]


def attribution_layer_for(s: Survey, targets: Sequence[str], model_name: str = "model") -> str:
    """The nearest attribution point upstream of every layer in ``targets``."""
    if not s.attribution_points:
        raise _no_blocks_error(model_name)
    for t in targets:
        if str(LayerRef.parse(t)) not in s.shapes:
            raise MTIConfigError(
                f"model {model_name}: target layer {t!r} is never reached by the forward"
            )
    first = min(s.order.index(str(LayerRef.parse(t))) for t in targets)
    before = [p for p in s.attribution_points if s.order.index(p) < first]
    if not before:
        raise MTIConfigError(
            f"model {model_name}: no block lies upstream of target {targets[0]!r} to attribute "
            f"to (first block: {s.blocks[0]}); choose a deeper target or set "
            "search.attribution_layer=NAME"
        )
    return max(before, key=s.order.index)


def position_for(s: Survey, layer: str) -> str:
    """``center`` for maps, ``cls`` (class token) or ``mean`` for tokens, ``mean`` otherwise."""
    shape = s.shapes.get(str(LayerRef.parse(layer)))
    if shape is None:
        raise MTIConfigError(f"layer {layer!r} is never reached by the model's forward")
    if len(shape) == 3:
        return "center"
    if len(shape) == 2:
        return "cls" if s.has_cls else "mean"
    return "mean"


def resolve_target(value: Any, model: nn.Module, input_size: Sequence[int], name: str) -> Any:
    """The target config with ``depth`` replaced by a layer and ``position: auto`` by a real
    position; other values pass unchanged. Surveys the model only when needed."""
    cache: list[Survey] = []

    def get() -> Survey:
        if not cache:
            cache.append(survey(model, input_size))
        return cache[0]

    def one(entry: Any) -> Any:
        if isinstance(entry, Mapping):
            entry = dict(entry)
            depth = entry.get("depth")
            if depth is not None:
                if entry.get("layer"):
                    raise MTIConfigError(
                        f"target has both layer={entry['layer']!r} and depth={depth}; give one "
                        "(e.g. target.layer=null target.depth=0.5)"
                    )
                entry["layer"] = layer_at_depth(get(), depth, name)
            if entry.get("position") == "auto" and entry.get("layer"):
                resolve_module(model, LayerRef.parse(entry["layer"]))
                entry["position"] = position_for(get(), entry["layer"])
            return entry
        if isinstance(entry, Sequence) and not isinstance(entry, str):
            return [one(e) for e in entry]
        return entry

    return one(value)


def relative_depth(s: Survey, layer: str) -> float | None:
    """The relative depth in (0, 1] of the block ``layer`` lies in (the inverse of
    :func:`layer_at_depth`: a block's feature layer at depth ``d`` reads ``d``): the blocks
    ending before ``layer`` plus its own, over all blocks. None when the forward never
    reaches ``layer`` or the model has no blocks."""
    name = str(LayerRef.parse(layer))
    if name not in s.order or not s.blocks:
        return None
    at = s.order.index(name)
    before = sum(1 for t in s.targets if s.order.index(str(LayerRef.parse(t))) < at)
    return min(before + 1, len(s.blocks)) / len(s.blocks)


def attribution_layer_auto(lm: LoadedModel, readout: Readout) -> str:
    """``attribution_layer=auto`` for the features of ``readout``: the model's own choice where
    it has one (CurveNet: ``pool1``) and it lies upstream of every feature, else the nearest
    block boundary upstream of the features' layers (in a model without blocks: the input of
    the features' module)."""
    preferred = lm.extra.get("attribution_layer")
    if preferred:
        try:
            attribute(lm, torch.zeros(len(readout.specs), *lm.input_size), readout, [preferred])
            return preferred
        except MTIConfigError:
            pass
    layers = [sp.layer for sp in readout.specs]
    s = survey(lm.model, lm.input_size)
    modules = {LayerRef.parse(layer).module for layer in layers}
    if not s.attribution_points and len(modules) == 1:
        # a flat hand-written model (no blocks, no activation modules): the targets' input
        return f"{modules.pop()}:in"
    return attribution_layer_for(s, layers, lm.name)


def one_feature(target: Any, lm: LoadedModel, what: str) -> FeatureSpec:
    """The one feature ``target`` names (depth and ``position: auto`` resolved on ``lm``), or
    a one-line error saying so, ``what`` telling why one (``the atlas maps one``)."""
    specs = parse_targets(resolve_target(target, lm.model, lm.input_size, lm.name))
    if len(specs) != 1:
        raise MTIConfigError(
            f"target names {len(specs)} features ({', '.join(map(str, specs[:4]))}); {what}: "
            "give one channel, e.g. target=bn2:19@center"
        )
    return specs[0]
