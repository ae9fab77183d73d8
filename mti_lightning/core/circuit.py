"""The inhibition circuit of one unit: which channels of an upstream layer carry its E- and
E+, what the weights say, and what removing them does.

Everything here is pure PyTorch on reduced numbers or on a model:

- :func:`channel_table`: each channel's share of the unit's E- and E+ over a data set and
  over its tensest images, its mean signed and mean absolute attribution, and the
  cancellation flag, from the per-image, per-channel sums of ``relu(A)`` and ``relu(-A)``
  that the one data pass stores (one attribution pass for all channels at once);
- :func:`expanded_weight`: the linearised path from the layer to the unit (Distill's
  "expanded weights"): the gradient of the unit with respect to the layer in a copy of the
  network whose activation modules are identities and whose max pools are average pools. Where
  the path is one convolution (+ eval BatchNorm) that is the kernel ``W[unit, c]`` times the
  BatchNorm scale, placed at the unit's position; deeper paths get the product of their
  linear parts. Activations applied as functions (``F.relu`` in a ``forward``) are not
  modules and stay; the gradient is then taken at the all-zero normalised input (mean
  image);
- :func:`spearman`: the rank correlation of two per-channel vectors;
- :func:`ablate`: the unit's activation with chosen channels of the layer zeroed, every
  condition (mask) of a batch in one forward (masks stacked along the batch);
- :func:`single_conv` and :func:`without_negative_weights`: the convolution that feeds the
  unit from the layer, and a copy of the model whose ``W[unit, c]`` are clamped to >= 0 for
  chosen channels (the "echo" experiment of Distill's Curve Circuits).
"""

from __future__ import annotations

import copy
import dataclasses
import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import nn

from mti_lightning.core.errors import MTIConfigError
from mti_lightning.core.features import Readout
from mti_lightning.core.layer_choice import survey
from mti_lightning.core.models import LoadedModel
from mti_lightning.core.module_graph import direct_feeds, set_module
from mti_lightning.core.probes import LayerRef, capture, resolve_module
from mti_lightning.core.token_grid import layer_views

# a channel cancels when |mean A_c| < CANCEL_RATIO * mean |A_c| (it excites about as much as it
# inhibits, so its summed weight hides it); only channels carrying at least MIN_MAGNITUDE of the
# largest channel's mean |A_c| are flagged (a silent channel is not "cancelling")
CANCEL_RATIO = 0.25
MIN_MAGNITUDE = 0.01
TENSE_FRACTION = 0.1

ACTIVATIONS = (
    nn.ReLU,
    nn.ReLU6,
    nn.LeakyReLU,
    nn.PReLU,
    nn.ELU,
    nn.CELU,
    nn.SELU,
    nn.GELU,
    nn.SiLU,
    nn.Mish,
    nn.Hardswish,
    nn.Hardtanh,
    nn.Softplus,
)


@dataclass
class ChannelTable:
    """Per channel ``(C,)``: shares of E- and E+ over all images and over the tensest ones,
    the mean over images of the spatially summed attribution (signed) and of ``|A|``, and the
    cancellation flag; ``tense``: the indices of the tensest images."""

    share_minus: torch.Tensor
    share_plus: torch.Tensor
    share_minus_tense: torch.Tensor
    share_plus_tense: torch.Tensor
    mean_signed: torch.Tensor
    mean_abs: torch.Tensor
    cancels: torch.Tensor
    tense: torch.Tensor

    def ranked(self, key: str, k: int) -> list[int]:
        """The ``k`` channels with the largest ``key`` (``share_minus``, ...), largest first."""
        return getattr(self, key).argsort(descending=True, stable=True)[:k].tolist()


def shares(per_image: torch.Tensor) -> torch.Tensor:
    """Each channel's share of the total of ``per_image`` ``(N, C)`` (zeros when all zero)."""
    totals = per_image.double().sum(0)
    whole = totals.sum()
    return (totals / whole if whole > 0 else torch.zeros_like(totals)).float()


def tensest(tension: torch.Tensor, fraction: float = TENSE_FRACTION) -> torch.Tensor:
    """Indices of the ``ceil(fraction * N)`` images (at least one) of largest tension."""
    n = max(1, math.ceil(fraction * len(tension)))
    return tension.argsort(descending=True, stable=True)[:n]


def channel_table(
    plus: torch.Tensor,
    minus: torch.Tensor,
    tense_fraction: float = TENSE_FRACTION,
    cancel_ratio: float = CANCEL_RATIO,
    min_magnitude: float = MIN_MAGNITUDE,
) -> ChannelTable:
    """The circuit's numbers from per-image, per-channel sums over positions of ``relu(A)``
    (``plus``) and ``relu(-A)`` (``minus``), both ``(N, C)``. The tensest images are those of
    largest ``min(E+, E-)`` (E summed over channels)."""
    if plus.shape != minus.shape or plus.dim() != 2 or len(plus) == 0:
        raise MTIConfigError(
            f"channel sums of shapes {tuple(plus.shape)} and {tuple(minus.shape)}; need two "
            "equal (N, C) with N >= 1"
        )
    plus, minus = plus.float(), minus.float()
    tension = torch.minimum(plus.sum(1), minus.sum(1))
    tense = tensest(tension, tense_fraction)
    mean_signed = (plus - minus).mean(0)
    mean_abs = (plus + minus).mean(0)
    carries = mean_abs >= min_magnitude * mean_abs.max().clamp_min(1e-30)
    cancels = carries & (mean_signed.abs() < cancel_ratio * mean_abs)
    return ChannelTable(
        share_minus=shares(minus),
        share_plus=shares(plus),
        share_minus_tense=shares(minus[tense]),
        share_plus_tense=shares(plus[tense]),
        mean_signed=mean_signed,
        mean_abs=mean_abs,
        cancels=cancels,
        tense=tense,
    )


def spearman(a: torch.Tensor, b: torch.Tensor) -> float:
    """Spearman's rank correlation of two vectors (average ranks for ties); NaN when either
    is constant."""

    def ranks(x: torch.Tensor) -> torch.Tensor:
        x = x.double().flatten()
        order = x.argsort(stable=True)
        r = torch.empty_like(x)
        r[order] = torch.arange(len(x), dtype=x.dtype)
        uniq, inverse = torch.unique(x, return_inverse=True)
        sums = torch.zeros(len(uniq), dtype=x.dtype).index_add_(0, inverse, r)
        counts = torch.zeros(len(uniq), dtype=x.dtype).index_add_(0, inverse, torch.ones_like(r))
        return (sums / counts)[inverse]

    ra, rb = ranks(a), ranks(b)
    ra, rb = ra - ra.mean(), rb - rb.mean()
    denom = (ra.square().sum() * rb.square().sum()).sqrt()
    return float(ra @ rb / denom) if denom > 0 else float("nan")


def linearised(model: nn.Module) -> nn.Module:
    """A copy of ``model`` with every activation module an identity and every max pool an
    average pool of the same window (the network's linear skeleton)."""
    out = copy.deepcopy(model)
    for name, module in list(out.named_modules()):
        if not name:
            continue
        if isinstance(module, ACTIVATIONS):
            set_module(out, name, nn.Identity())
        elif isinstance(module, nn.MaxPool2d):
            pool = nn.AvgPool2d(
                module.kernel_size,
                module.stride,
                module.padding,
                module.ceil_mode,
                count_include_pad=False,
            )
            set_module(out, name, pool)
        elif isinstance(module, nn.AdaptiveMaxPool2d):
            set_module(out, name, nn.AdaptiveAvgPool2d(module.output_size))
    return out.eval()


def expanded_weight(lm: LoadedModel, readout: Readout, layer: str) -> torch.Tensor:
    """The expanded weight of the one feature of ``readout`` at ``layer``: ``d f / d act``
    of the linearised network (:func:`linearised`) at the all-zero normalised input, shape of
    the layer's value (``(C, H, W)`` for a map)."""
    if len(readout.specs) != 1:
        raise MTIConfigError(f"expanded weights of one feature; got {len(readout.specs)}")
    net = linearised(lm.model)
    device = next(iter(readout.buffers())).device
    x = torch.zeros(1, *lm.input_size, device=device, requires_grad=True)
    with torch.enable_grad():
        acts = capture(net, x, [layer, *readout.layers])
        value = readout(acts, 1).sum()
        (grad,) = torch.autograd.grad(value, acts[layer], allow_unused=True)
    if grad is None:
        raise MTIConfigError(
            f"attribution layer {layer!r} does not lie upstream of {readout.specs[0]}; choose "
            "an earlier layer"
        )
    return grad[0].detach()


def upstream_layer(lm: LoadedModel, layer: str) -> str:
    """The layer one step upstream of ``layer`` for a second circuit ring: the nearest
    automatic attribution point (``core.layer_choice``) that lies before the last convolution
    (or linear layer) preceding ``layer``, so at least one weight layer mixes channels on the
    way; else that convolution's input."""
    s = survey(lm.model, lm.input_size)
    name = str(LayerRef.parse(layer))
    if name not in s.order:
        raise MTIConfigError(f"layer {layer!r} is never reached by the model's forward")
    modules = dict(lm.model.named_modules())
    at = s.order.index(name)
    weights = [
        i
        for i, n in enumerate(s.order[:at])
        if not n.endswith(":in") and isinstance(modules.get(n), (nn.Conv2d, nn.Linear))
    ]
    if not weights:
        raise MTIConfigError(f"no convolution lies upstream of {layer!r}; nothing to attribute to")
    last = weights[-1]
    before = [p for p in s.attribution_points if p in s.order and s.order.index(p) < last]
    return max(before, key=s.order.index) if before else f"{s.order[last]}:in"


def kernel_box(weight: torch.Tensor) -> tuple[int, int, int, int]:
    """``(h0, h1, w0, w1)`` (end exclusive) of the positions where an expanded weight
    ``(C, H, W)`` is non-zero in any channel (the whole map when all zero)."""
    mag = weight.abs().sum(0)
    rows, cols = mag.sum(1).nonzero().flatten(), mag.sum(0).nonzero().flatten()
    if len(rows) == 0:
        return 0, mag.shape[0], 0, mag.shape[1]
    return int(rows[0]), int(rows[-1]) + 1, int(cols[0]), int(cols[-1]) + 1


def ablation_masks(
    channels: int, chosen: Sequence[int], k: int, seeds: Sequence[int]
) -> torch.Tensor:
    """Masks ``(2 + len(seeds), C)``: row 0 keeps every channel, row 1 zeroes ``chosen``, and
    each further row zeroes ``k`` channels drawn at random (seeded) as a control."""
    masks = torch.ones(2 + len(seeds), channels)
    masks[1, list(chosen)] = 0
    for row, seed in enumerate(seeds, start=2):
        gen = torch.Generator().manual_seed(int(seed))
        masks[row, torch.randperm(channels, generator=gen)[:k]] = 0
    return masks


def ablate(
    lm: LoadedModel,
    readout: Readout,
    layer: str,
    images: torch.Tensor,
    masks: torch.Tensor,
    batch_size: int = 64,
) -> torch.Tensor:
    """The feature of ``readout`` (one) on ``images`` ``(B, 3, H, W)`` in [0, 1] with the
    channels of ``layer`` multiplied by each mask ``(M, C)``: ``(M, B)``. Every mask of a
    chunk of images runs in one forward (the chunk repeated along the batch, mask-major)."""
    ref = LayerRef.parse(layer)
    module = resolve_module(lm.model, ref)
    device = next(iter(readout.buffers())).device
    masks = masks.to(device)
    m = len(masks)
    state: dict[str, torch.Tensor] = {}
    channels_last = layer_views(lm.model, lm.input_size, [layer])[layer].layout == "channels_last"

    def scaled(x: torch.Tensor) -> torch.Tensor:
        mask = state["mask"].to(x.dtype)
        if x.dim() == 4:  # a map (B, C, H, W), or a Swin stage's (B, H, W, C)
            return x * (mask[:, None, None, :] if channels_last else mask[:, :, None, None])
        return x * (mask[:, None, :] if x.dim() == 3 else mask)

    if ref.port == "in":
        handle = module.register_forward_pre_hook(
            lambda _m, args: (scaled(args[0]), *args[1:])
        )
    else:
        handle = module.register_forward_hook(
            lambda _m, _a, out: scaled(out if isinstance(out, torch.Tensor) else out[0])
        )
    out = []
    try:
        with torch.no_grad():
            for start in range(0, len(images), batch_size):
                chunk = images[start : start + batch_size].to(device)
                b = len(chunk)
                state["mask"] = masks.repeat_interleave(b, 0)
                x = lm.normalize(chunk).repeat(m, 1, 1, 1)
                acts = capture(lm.model, x, readout.layers)
                out.append(readout(acts, m * b).reshape(m, b))
    finally:
        handle.remove()
    return torch.cat(out, 1).cpu()


def single_conv(lm: LoadedModel, layer: str, unit_layer: str) -> str | None:
    """The name of the ``nn.Conv2d`` that reads ``layer`` directly (its input is that layer's
    value) and feeds the unit's layer directly or through one eval BatchNorm, or None when the
    path from the layer to the unit is not one convolution."""
    ref = LayerRef.parse(layer)
    unit = resolve_module(lm.model, LayerRef.parse(unit_layer))
    device = next(lm.model.parameters()).device
    example = lm.normalize(torch.rand(1, *lm.input_size, device=device))
    source = resolve_module(lm.model, ref)
    if ref.port == "in":
        names = [n for n, m in lm.model.named_modules() if m is source]
        candidates = names if isinstance(source, nn.Conv2d) else []
    else:
        pairs = direct_feeds(
            lm.model, example, lambda m: m is source, lambda m: isinstance(m, nn.Conv2d)
        )
        candidates = [conv for _, conv in pairs]
    for name in candidates:
        conv = lm.model.get_submodule(name)
        if conv is unit or _feeds(lm.model, example, conv, unit):
            return name
    return None


def _feeds(model: nn.Module, example: torch.Tensor, conv: nn.Module, unit: nn.Module) -> bool:
    """Whether ``unit`` (a BatchNorm or an activation) reads ``conv``'s output directly, or
    through one eval BatchNorm."""
    direct = direct_feeds(model, example, lambda m: m is conv, lambda m: m is unit)
    if direct:
        return True
    bns = direct_feeds(model, example, lambda m: m is conv, lambda m: isinstance(m, nn.BatchNorm2d))
    for _, bn_name in bns:
        bn = model.get_submodule(bn_name)
        if direct_feeds(model, example, lambda m, bn=bn: m is bn, lambda m: m is unit):
            return True
    return False


def without_negative_weights(
    lm: LoadedModel, conv_name: str, unit: int, channels: Sequence[int]
) -> LoadedModel:
    """A copy of ``lm`` whose convolution ``conv_name`` has ``W[unit, c]`` clamped to >= 0
    for each channel ``c`` of ``channels`` (the rest of the network untouched)."""
    model = copy.deepcopy(lm.model)
    conv = model.get_submodule(conv_name)
    with torch.no_grad():
        idx = torch.as_tensor(list(channels), dtype=torch.long)
        conv.weight[unit, idx] = conv.weight[unit, idx].clamp_min(0)
    return dataclasses.replace(lm, model=model, extra=dict(lm.extra))
