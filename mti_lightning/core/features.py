"""Feature specs: one scalar read off a layer, as ``LAYER:CHANNEL@POSITION`` or a direction.

Every feature is a linear readout ``f(x) = <W, act_L(x)>`` of one layer's value, so a batch of
K images with K different features (same or different layers) is read in one batched product,
and ``d f / d act_L = W`` exactly.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import nn

from mti_lightning.core.errors import MTIConfigError
from mti_lightning.core.probes import LayerRef
from mti_lightning.core.token_grid import SpatialView, layer_views, shape_view

Position = str | int | tuple[int, int]
_POS_RE = re.compile(r"^\(?\s*(-?\d+)\s*,\s*(-?\d+)\s*\)?$")


@dataclass(frozen=True)
class FeatureSpec:
    """A channel (or direction in channel space) of a layer at a position.

    ``position``: for maps ``center``, ``mean`` or ``(h, w)``; for tokens ``cls``, ``mean`` or a
    token index, and ``center`` or ``(h, w)`` on the patch grid where the tokens form one
    (``core.token_grid``); for flat vectors ``mean`` (ignored).
    """

    layer: str
    channel: int | None = 0
    position: Position = "center"
    direction: tuple[float, ...] | None = None

    def __str__(self) -> str:
        what = "dir" if self.direction is not None else str(self.channel)
        pos = self.position
        pos_s = f"({pos[0]},{pos[1]})" if isinstance(pos, tuple) else str(pos)
        return f"{self.layer}:{what}@{pos_s}"

    @property
    def ref(self) -> LayerRef:
        return LayerRef.parse(self.layer)


def parse_position(text: str | int | Sequence[int]) -> Position:
    """``center`` | ``mean`` | ``cls`` | ``(h,w)`` | token index."""
    if isinstance(text, int):
        return text
    if isinstance(text, (tuple, list)):
        if len(text) != 2:
            raise MTIConfigError(f"position {text!r} must be (h, w)")
        return (int(text[0]), int(text[1]))
    t = str(text).strip()
    if t in ("center", "centre", "mean", "cls"):
        return "center" if t == "centre" else t
    m = _POS_RE.match(t)
    if m:
        return (int(m.group(1)), int(m.group(2)))
    if re.fullmatch(r"-?\d+", t):
        return int(t)
    raise MTIConfigError(
        f"bad position {text!r}; valid: center, mean, (h,w) for maps; cls, mean, an index for tokens"
    )


def parse_feature(text: str) -> FeatureSpec:
    """Parse ``LAYER:CHANNEL@POSITION`` (position defaults to ``center``)."""
    if not isinstance(text, str) or ":" not in text:
        raise MTIConfigError(
            f"bad feature {text!r}; expected LAYER:CHANNEL@POSITION, e.g. layer3.1.bn1:17@center"
        )
    body, _, pos = text.partition("@")
    layer, _, channel = body.rpartition(":")
    if not layer or not re.fullmatch(r"\d+", channel.strip()):
        raise MTIConfigError(
            f"bad feature {text!r}: channel {channel!r} is not a non-negative integer; "
            "expected LAYER:CHANNEL@POSITION, e.g. layer3.1.bn1:17@center"
        )
    return FeatureSpec(layer.strip(), int(channel), parse_position(pos) if pos else "center")


def _check_spec(spec: FeatureSpec, view: SpatialView) -> None:
    """Raise a clear error if ``spec`` cannot be read off a layer with spatial ``view``."""
    shape, layout = view.shape, view.layout
    if layout == "batched" or (layout == "vector" and len(shape) != 1):
        raise MTIConfigError(
            f"layer {spec.layer} has value shape {shape}; need (C,H,W), (N,C), (C,)"
            + (f": {view.reason}" if layout == "batched" else "")
        )
    n_channels = view.channels
    if spec.direction is not None:
        if len(spec.direction) != n_channels:
            raise MTIConfigError(
                f"direction for {spec.layer} has {len(spec.direction)} entries; the layer has "
                f"{n_channels} channels"
            )
    elif spec.channel is None or not 0 <= spec.channel < n_channels:
        raise MTIConfigError(
            f"channel {spec.channel} out of range for layer {spec.layer}: valid 0..{n_channels - 1}"
        )
    pos = spec.position
    if layout in ("map", "channels_last"):
        h, w = view.grid
        if isinstance(pos, tuple):
            if not (0 <= pos[0] < h and 0 <= pos[1] < w):
                raise MTIConfigError(
                    f"position {pos} out of range for layer {spec.layer} with a {h}x{w} map: "
                    f"valid (0..{h - 1}, 0..{w - 1}), center or mean"
                )
        elif pos not in ("center", "mean"):
            raise MTIConfigError(
                f"position {pos!r} is for tokens; layer {spec.layer} is a {h}x{w} map: "
                "use center, mean or (h,w)"
            )
    elif layout == "tokens":
        n = shape[0]
        if isinstance(pos, int):
            if not 0 <= pos < n:
                raise MTIConfigError(
                    f"token {pos} out of range for layer {spec.layer}: valid 0..{n - 1}, cls, mean"
                )
        elif pos == "center" or isinstance(pos, tuple):
            if view.grid is None:
                raise MTIConfigError(
                    f"position {pos!r} is for maps; layer {spec.layer} holds {n} tokens that "
                    f"form no patch grid ({view.reason}): use cls, mean or a token index"
                )
            h, w = view.grid
            if isinstance(pos, tuple) and not (0 <= pos[0] < h and 0 <= pos[1] < w):
                raise MTIConfigError(
                    f"position {pos} out of range for layer {spec.layer} with a {h}x{w} patch "
                    f"grid: valid (0..{h - 1}, 0..{w - 1}), center, mean, cls or a token index"
                )
        elif pos not in ("cls", "mean"):
            raise MTIConfigError(
                f"bad position {pos!r} for layer {spec.layer}; use cls, mean or a token index"
            )


def readout_weight(
    spec: FeatureSpec, shape: tuple[int, ...], view: SpatialView | None = None
) -> torch.Tensor:
    """The tensor ``W`` (same shape as the layer value) with ``f = <W, act>``; ``view``: the
    layer's spatial view (from the shape alone when not given: maps, or tokens without grid)."""
    view = view if view is not None else shape_view(spec.layer, shape)
    _check_spec(spec, view)
    c = (
        torch.tensor(spec.direction, dtype=torch.float32)
        if spec.direction is not None
        else torch.nn.functional.one_hot(torch.tensor(spec.channel), view.channels).float()
    )
    pos = spec.position
    on_grid = view.layout != "tokens" or pos == "center" or isinstance(pos, tuple)
    if view.grid is not None and on_grid:
        h, wd = view.grid
        grid = torch.zeros(len(c), h, wd)
        if pos == "mean":
            grid += c.view(-1, 1, 1) / (h * wd)
        else:
            i, j = (h // 2, wd // 2) if pos == "center" else pos
            grid[:, i, j] = c
        return view.from_grid(grid)
    w = torch.zeros(shape)
    if len(shape) == 2:
        if pos == "mean":
            w += c.view(1, -1) / shape[0]
        else:
            w[0 if pos == "cls" else pos] = c
    else:
        w += c
    return w


class Readout(nn.Module):
    """Reads feature k off image k for a batch of K images (each with D transform draws).

    Holds, per layer, which images read it and their stacked readout weights, so a forward
    over ``K * D`` inputs (image-major) gives a ``(K, D)`` tensor of feature values.
    """

    def __init__(
        self,
        specs: Sequence[FeatureSpec],
        shapes: dict[str, tuple[int, ...]],
        views: dict[str, SpatialView] | None = None,
    ):
        super().__init__()
        self.specs = list(specs)
        self.layers = sorted({str(s.ref) for s in specs})
        self.shapes = {k: tuple(v) for k, v in shapes.items()}
        self.views = dict(views or {})
        for i, layer in enumerate(self.layers):
            idx = [k for k, s in enumerate(specs) if str(s.ref) == layer]
            view = self.views.get(layer)
            w = torch.stack([readout_weight(specs[k], shapes[layer], view) for k in idx])
            self.register_buffer(f"index_{i}", torch.tensor(idx), persistent=False)
            self.register_buffer(f"weight_{i}", w, persistent=False)

    def groups(self):
        """(layer, image indices, weights) for each layer read."""
        for i, layer in enumerate(self.layers):
            yield layer, getattr(self, f"index_{i}"), getattr(self, f"weight_{i}")

    def forward(self, acts: dict[str, torch.Tensor], n_draws: int = 1) -> torch.Tensor:
        """Feature values ``(K, D)`` from layer values of ``K * D`` image-major inputs."""
        k = len(self.specs)
        if len(self.layers) == 1:
            layer, _, w = next(self.groups())
            a = acts[layer].reshape(k, n_draws, -1)
            return torch.einsum("kdn,kn->kd", a, w.flatten(1).to(a.dtype))
        out = None
        for layer, idx, w in self.groups():
            a = acts[layer].reshape(k, n_draws, -1)[idx]
            vals = torch.einsum("kdn,kn->kd", a, w.flatten(1).to(a.dtype))
            if out is None:
                out = vals.new_zeros(k, n_draws)
            out = out.index_copy(0, idx, vals)
        return out

    def weight_for(self, layer: str) -> torch.Tensor:
        """Readout weights ``(K, *shape)`` of every image for ``layer`` (zero where not read)."""
        for name, idx, w in self.groups():
            if name == layer:
                full = w.new_zeros(len(self.specs), *w.shape[1:])
                return full.index_copy(0, idx, w)
        raise KeyError(layer)


def build_readout(
    model: nn.Module, input_size: Sequence[int], specs: Sequence[FeatureSpec]
) -> Readout:
    """Validate specs with one probe forward (clear errors first) and build their readout."""
    if not specs:
        raise MTIConfigError("no feature given; expected at least one LAYER:CHANNEL@POSITION")
    views = layer_views(model, input_size, sorted({str(s.ref) for s in specs}))
    return Readout(specs, {k: v.shape for k, v in views.items()}, views)
