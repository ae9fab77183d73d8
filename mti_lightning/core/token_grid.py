"""The spatial view of a layer: its value read as a ``(C, H, W)`` grid, whatever its layout.

A CNN's maps are grids already. A vision transformer's token layers hold the same grid in
another layout, which this module recognises from the model's own declarations (never by
guessing a square root):

- ViT / DeiT / BEiT / EVA style ``(N, C)``: ``num_prefix_tokens`` non-patch tokens (class,
  DeiT's distillation, register tokens; named ``cls``, ``dist``, ``reg0``...) come first, then
  the patch grid row by row; the grid is the input size over the patch size;
- Swin's stages ``(H, W, C)`` (the model says ``output_fmt == "NHWC"``), and its MLPs'
  ``(H * W, C)`` tokens;
- LeViT's ``(N, C)`` tokens, one grid per stage;

where a stage's grid is the input size over the stage's reduction in timm's ``feature_info``
(or, for a model without it, over its ``patch_embed.patch_size``). The non-patch tokens are kept
apart (:meth:`SpatialView.prefix_part`). A layer whose forward runs several rows per image
(Swin's window attention, MobileViT's unfolded patches) or whose tokens are no grid of the
model has no grid, and :meth:`SpatialView.require_grid` says why in one line.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import torch
from torch import nn

from mti_lightning.core.errors import MTIConfigError
from mti_lightning.core.probes import LayerRef, capture

Grid = tuple[int, int]


@dataclass(frozen=True)
class SpatialView:
    """How one layer's value (``shape``, without batch) reads as a ``(C, H, W)`` grid.

    ``layout``: ``map`` (C, H, W), ``channels_last`` (H, W, C), ``tokens`` (N, C),
    ``vector`` (C,), or ``batched`` (the forward runs several rows per image); ``grid``:
    ``(H, W)``, None where the value forms none (``reason`` says why); ``prefix``: the names of
    the non-patch tokens before the grid's tokens.
    """

    layer: str
    shape: tuple[int, ...]
    layout: str
    grid: Grid | None = None
    prefix: tuple[str, ...] = ()
    reason: str = ""

    @property
    def channels(self) -> int:
        return self.shape[0] if self.layout in ("map", "vector") else self.shape[-1]

    @property
    def is_map(self) -> bool:
        """The value is a ``(C, H, W)`` map already (the view changes nothing)."""
        return self.layout == "map"

    @property
    def grid_shape(self) -> tuple[int, int, int]:
        """``(C, H, W)`` of the grid (an error where the layer has none)."""
        h, w = self.require_grid().grid
        return (self.channels, h, w)

    def require_grid(self, what: str = "a spatial grid") -> SpatialView:
        """This view, or a one-line error naming the layer and why it forms no grid."""
        if self.grid is None:
            raise MTIConfigError(
                f"layer {self.layer!r} (value shape {self.shape}) has no {what}: {self.reason}"
            )
        return self

    def to_grid(self, value: torch.Tensor) -> torch.Tensor:
        """``(B, *shape)`` -> the patch grid ``(B, C, H, W)`` (non-patch tokens left out)."""
        h, w = self.require_grid().grid
        if self.layout == "map":
            return value
        if self.layout == "channels_last":
            return value.permute(0, 3, 1, 2)
        patches = value[:, len(self.prefix) :]
        return patches.transpose(1, 2).reshape(value.shape[0], -1, h, w)

    def prefix_part(self, value: torch.Tensor) -> torch.Tensor | None:
        """The non-patch tokens ``(B, P, C)`` of ``(B, *shape)``; None where there are none."""
        if self.layout != "tokens" or not self.prefix:
            return None
        return value[:, : len(self.prefix)]

    def from_grid(self, grid: torch.Tensor) -> torch.Tensor:
        """A ``(C, H, W)`` grid laid out like the layer's value (zero on non-patch tokens)."""
        self.require_grid()
        if self.layout == "map":
            return grid
        if self.layout == "channels_last":
            return grid.permute(1, 2, 0)
        tokens = grid.flatten(1).t()
        return torch.cat([tokens.new_zeros(len(self.prefix), tokens.shape[1]), tokens])


@dataclass(frozen=True)
class ModelGrids:
    """What a model declares about its token grids at one input size: the names of its
    non-patch tokens, each stage's grid (``(module, grids)``, floor and ceil of the input over
    the stage's reduction), and whether its stages are channels-last."""

    prefix: tuple[str, ...]
    stages: tuple[tuple[str, tuple[Grid, ...]], ...]
    channels_last: bool

    @classmethod
    def of(cls, model: nn.Module, input_size: Sequence[int]) -> ModelGrids:
        model = getattr(model, "_orig_mod", model)
        if len(input_size) < 3:  # not an image model (the toys' vectors): no grids
            return cls((), (), False)
        h, w = (int(v) for v in input_size[-2:])
        reductions = [
            (str(info["module"]), info["reduction"])
            for info in getattr(model, "feature_info", None) or []
            if isinstance(info, dict) and "module" in info and "reduction" in info
        ]
        patch = getattr(getattr(model, "patch_embed", None), "patch_size", None)
        if not reductions and patch is not None:
            reductions = [("", patch)]
        stages = []
        for module, r in reductions:
            rh, rw = (r, r) if isinstance(r, int) else (int(r[0]), int(r[1]))
            floor, ceil = (h // rh, w // rw), (-(-h // rh), -(-w // rw))
            stages.append((module, tuple(dict.fromkeys([floor, ceil]))))
        fmts = (getattr(m, "output_fmt", None) for m in (model, getattr(model, "patch_embed", None)))
        channels_last = any(str(f or "").endswith("NHWC") for f in fmts)
        return cls(_prefix_names(model), tuple(stages), channels_last)

    def grids_for(self, module: str) -> tuple[Grid, ...]:
        """The grids of the stage holding ``module`` first, then every other stage's (a
        stage's downsampling reads the grid of the stage before)."""
        own = [
            g
            for name, grids in self.stages
            if name and (module == name or module.startswith(f"{name}."))
            for g in grids
        ]
        return tuple(dict.fromkeys([*own, *self.all_grids]))

    @property
    def all_grids(self) -> tuple[Grid, ...]:
        return tuple(dict.fromkeys(g for _, grids in self.stages for g in grids))


def _prefix_names(model: nn.Module) -> tuple[str, ...]:
    """Names of the tokens a timm ViT puts before its patches (class, distillation, registers)."""
    n = int(getattr(model, "num_prefix_tokens", 0) or 0)
    names = []
    if getattr(model, "cls_token", None) is not None:
        names.append("cls")
    if getattr(model, "dist_token", None) is not None:
        names.append("dist")
    reg = getattr(model, "reg_token", None)
    names += [f"reg{i}" for i in range(reg.shape[1] if reg is not None else 0)]
    return tuple(names) if len(names) == n else tuple(f"prefix{i}" for i in range(n))


def view_of(
    grids: ModelGrids, layer: str, shape: Sequence[int], rows_per_image: int = 1
) -> SpatialView:
    """The spatial view of ``layer`` with value ``shape`` (no batch) in a model with ``grids``;
    ``rows_per_image``: rows of the layer's value per input image (1 unless the forward
    splits an image into windows or patch groups)."""
    shape = tuple(int(v) for v in shape)
    if rows_per_image != 1:
        return SpatialView(
            layer,
            shape,
            "batched",
            reason=f"its forward runs {rows_per_image} rows per image (attention windows or "
            "unfolded patches), not one grid per image; read the block's output instead",
        )
    if len(shape) == 1:
        return SpatialView(layer, shape, "vector", reason="it is a flat vector")
    if len(shape) == 3:
        known = grids.all_grids
        if grids.channels_last and shape[:2] in known and shape[1:] not in known:
            return SpatialView(layer, shape, "channels_last", (shape[0], shape[1]))
        return SpatialView(layer, shape, "map", (shape[1], shape[2]))
    if len(shape) != 2:
        return SpatialView(layer, shape, "vector", reason=f"a value of {len(shape)} dimensions")
    n = shape[0]
    candidates = grids.grids_for(LayerRef.parse(layer).module)
    if not candidates:
        return SpatialView(
            layer,
            shape,
            "tokens",
            reason="the model declares no patch grid (timm's feature_info or patch_embed)",
        )
    for prefix in dict.fromkeys([grids.prefix, ()]):
        for h, w in candidates:
            if n == len(prefix) + h * w:
                return SpatialView(layer, shape, "tokens", (h, w), prefix)
    said = " or ".join(f"{h}x{w}" for h, w in candidates)
    extra = f" (+ {len(grids.prefix)} non-patch tokens)" if grids.prefix else ""
    return SpatialView(
        layer, shape, "tokens", reason=f"its {n} tokens are not the model's {said} grid{extra}"
    )


def spatial_view(
    model: nn.Module, input_size: Sequence[int], layer: str, shape: Sequence[int]
) -> SpatialView:
    """The spatial view of ``layer`` (value ``shape`` without batch), from the model's
    declarations alone (no forward; for a layer already checked by :func:`layer_views`)."""
    return view_of(ModelGrids.of(model, input_size), layer, shape)


def layer_views(
    model: nn.Module, input_size: Sequence[int], layers: Iterable[str]
) -> dict[str, SpatialView]:
    """The spatial view of each layer, from one probe forward of one image (which also tells
    layers whose forward runs several rows per image)."""
    layers = list(dict.fromkeys(layers))
    p = next(iter(model.parameters()), None)
    device = p.device if p is not None else torch.device("cpu")
    with torch.no_grad():
        values = capture(model, torch.zeros(1, *input_size, device=device), layers)
    grids = ModelGrids.of(model, input_size)
    return {
        name: view_of(grids, name, tuple(v.shape[1:]), int(v.shape[0])) for name, v in values.items()
    }


def shape_view(layer: str, shape: Sequence[int]) -> SpatialView:
    """The view of a value known only by its shape (no model): maps are maps, tokens have no
    grid, as before token grids existed."""
    return view_of(ModelGrids((), (), False), layer, shape)

