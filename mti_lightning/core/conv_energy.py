"""The closed form of ``E+`` and ``E-`` where the attribution layer feeds the unit through one
convolution (optionally followed by an eval BatchNorm).

For unit ``k`` at output position ``p`` of ``conv``, ``d f / d a`` is the kernel ``W[k]``
placed at ``p`` (times the BatchNorm's scale ``s[k]``), so the attribution is
``A = a * s W[k]`` there and zero elsewhere (zero padding adds no input). With ``a+ = relu(a)``,
``a- = relu(-a)``, ``W+ = relu(W)``, ``W- = relu(-W)`` and ``a+ a- = 0``, ``W+ W- = 0``:

    E+ = |s| (conv(a+, W+) + conv(a-, W-)),   E- = |s| (conv(a+, W-) + conv(a-, W+))

with the two swapped where ``s < 0``; every term keeps the convolution's stride, padding,
dilation and groups. The L2 energies follow the same way from the squares (the cross terms
vanish for the same reason): ``E+_L2 = |s| sqrt(conv(a+^2, W+^2) + conv(a-^2, W-^2))``.
So the energies of every channel at every position cost eight convolutions of the attribution
layer's map, instead of one backward per (unit, position).

:func:`one_conv_path` recognises such a path from a real forward (tensor identity, not module
order): the unit's value must be the output of a plain ``nn.Conv2d`` (zero padding), or of a
plain eval ``nn.BatchNorm2d`` whose input is such a convolution's output, and the attribution
layer must be that convolution's input. Anything else is "not one convolution", and the caller
uses the batched path (``core/unit_attribution.py``).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from mti_lightning.core.module_graph import Value, first_calls
from mti_lightning.core.probes import LayerRef, resolve_module


@dataclass(frozen=True)
class ConvPath:
    """A unit layer fed by one convolution ``conv`` (then BatchNorm ``bn``, or None) from the
    attribution layer ``attr_layer`` (a layer name, e.g. ``layer3.0.conv1:in``)."""

    conv: str
    bn: str | None
    attr_layer: str


def bn_affine(bn: nn.BatchNorm2d | None, channels: int, like: torch.Tensor) -> tuple:
    """Per-channel ``(scale, shift)`` of an eval BatchNorm (``(1, 0)`` without one)."""
    if bn is None:
        return like.new_ones(channels), like.new_zeros(channels)
    scale = torch.rsqrt(bn.running_var.to(like.dtype) + bn.eps)
    if bn.weight is not None:
        scale = scale * bn.weight.to(like.dtype)
    shift = -bn.running_mean.to(like.dtype) * scale
    if bn.bias is not None:
        shift = shift + bn.bias.to(like.dtype)
    return scale, shift


def _conv(x: torch.Tensor, w: torch.Tensor, conv: nn.Conv2d) -> torch.Tensor:
    return F.conv2d(x, w, None, conv.stride, conv.padding, conv.dilation, conv.groups)


def conv_energies(
    a: torch.Tensor, conv: nn.Conv2d, bn: nn.BatchNorm2d | None = None, l2: bool = True
) -> dict[str, torch.Tensor]:
    """``e_plus``, ``e_minus`` (and with ``l2`` ``e_plus_l2``, ``e_minus_l2``) and the unit's
    ``activation`` (``bn(conv(a))``) of every output channel at every output position, each
    ``(B, C_out, H_out, W_out)``, from the attribution layer's map ``a (B, C_in, H, W)``."""
    w = conv.weight.to(a.dtype)
    wp, wm = w.clamp_min(0), (-w).clamp_min(0)
    ap, am = a.clamp_min(0), (-a).clamp_min(0)
    scale, shift = bn_affine(bn, w.shape[0], a)
    flip = (scale < 0).view(1, -1, 1, 1)
    mag = scale.abs().view(1, -1, 1, 1)

    def signed(plus: torch.Tensor, minus: torch.Tensor, power: float) -> tuple:
        m = mag if power == 1 else mag.square()
        return torch.where(flip, minus, plus) * m, torch.where(flip, plus, minus) * m

    plus = _conv(ap, wp, conv) + _conv(am, wm, conv)
    minus = _conv(ap, wm, conv) + _conv(am, wp, conv)
    e_plus, e_minus = signed(plus, minus, 1)
    pre = _conv(a, w, conv)
    if conv.bias is not None:
        pre = pre + conv.bias.to(a.dtype).view(1, -1, 1, 1)
    out = {
        "e_plus": e_plus,
        "e_minus": e_minus,
        "activation": pre * scale.view(1, -1, 1, 1) + shift.view(1, -1, 1, 1),
    }
    if l2:
        wp2, wm2, ap2, am2 = wp.square(), wm.square(), ap.square(), am.square()
        plus2 = _conv(ap2, wp2, conv) + _conv(am2, wm2, conv)
        minus2 = _conv(ap2, wm2, conv) + _conv(am2, wp2, conv)
        p2, m2 = signed(plus2, minus2, 2)
        out["e_plus_l2"], out["e_minus_l2"] = p2.clamp_min(0).sqrt(), m2.clamp_min(0).sqrt()
    return out


def conv_unit_energies(
    a: torch.Tensor,
    conv: nn.Conv2d,
    bn: nn.BatchNorm2d | None,
    channels: torch.Tensor,
    position: str = "center",
    mean_grad: torch.Tensor | None = None,
) -> dict[str, torch.Tensor]:
    """The energies and activation ``(B, K)`` of units ``channels`` read at ``position``:
    ``center`` (the output map's centre; only the window it reads is computed), ``max`` (each image's largest value of the unit,
    where its energies are read) or ``mean`` (the spatial mean: its gradient ``G_k`` is the
    same for every image, so ``E+ = <a+, relu(G_k)> + <a-, relu(-G_k)>``, one matrix product;
    ``mean_grad``: :func:`mean_gradient`, computed once for many batches)."""
    if position == "mean":
        return _mean_energies(a, conv, bn, channels, mean_grad)
    if position == "center":
        return _center_energies(a, conv, bn, channels)
    maps = conv_energies(a, conv, bn)
    index = maps["activation"][:, channels].flatten(2).argmax(2, keepdim=True)
    return {k: v[:, channels].flatten(2).gather(2, index)[:, :, 0] for k, v in maps.items()}


def _center_energies(
    a: torch.Tensor, conv: nn.Conv2d, bn: nn.BatchNorm2d | None, channels: torch.Tensor
) -> dict[str, torch.Tensor]:
    """The closed form at the output map's centre only: the zero-padded window of ``a`` that
    the centre reads, times the kernels, as grouped matrix products (a convolution with one
    output position, without the convolution kernels' per-call set-up)."""
    (h, w), (kh, kw) = a.shape[2:], conv.kernel_size
    (sh, sw), (ph, pw), (dh, dw) = conv.stride, conv.padding, conv.dilation
    out_h = (h + 2 * ph - dh * (kh - 1) - 1) // sh + 1
    out_w = (w + 2 * pw - dw * (kw - 1) - 1) // sw + 1
    top, left = (out_h // 2) * sh - ph, (out_w // 2) * sw - pw
    rows = torch.arange(kh, device=a.device) * dh + top
    cols = torch.arange(kw, device=a.device) * dw + left
    inside = ((rows >= 0) & (rows < h))[:, None] & ((cols >= 0) & (cols < w))[None, :]
    window = a[:, :, rows.clamp(0, h - 1)][:, :, :, cols.clamp(0, w - 1)] * inside
    g = conv.groups
    x = window.reshape(a.shape[0], g, -1)  # (B, G, C_in/G * kh * kw)
    weight = conv.weight.to(a.dtype)
    wg = weight.reshape(g, weight.shape[0] // g, -1)  # (G, C_out/G, C_in/G * kh * kw)
    scale, shift = bn_affine(bn, weight.shape[0], a)

    def mm(xs: torch.Tensor, ws: torch.Tensor) -> torch.Tensor:
        return torch.einsum("bgi,goi->bgo", xs, ws).flatten(1)[:, channels]

    xp, xm, wp, wm = x.clamp_min(0), (-x).clamp_min(0), wg.clamp_min(0), (-wg).clamp_min(0)
    plus, minus = mm(xp, wp) + mm(xm, wm), mm(xp, wm) + mm(xm, wp)
    xp2, xm2, wp2, wm2 = xp.square(), xm.square(), wp.square(), wm.square()
    plus2, minus2 = mm(xp2, wp2) + mm(xm2, wm2), mm(xp2, wm2) + mm(xm2, wp2)
    s = scale[channels]
    flip, mag = s < 0, s.abs()
    pre = mm(x, wg)
    if conv.bias is not None:
        pre = pre + conv.bias.to(a.dtype)[channels]
    return {
        "e_plus": torch.where(flip, minus, plus) * mag,
        "e_minus": torch.where(flip, plus, minus) * mag,
        "e_plus_l2": torch.where(flip, minus2, plus2).clamp_min(0).sqrt() * mag,
        "e_minus_l2": torch.where(flip, plus2, minus2).clamp_min(0).sqrt() * mag,
        "activation": pre * s + shift[channels],
    }


def mean_gradient(
    conv: nn.Conv2d, bn: nn.BatchNorm2d | None, channels: torch.Tensor, like: torch.Tensor
) -> torch.Tensor:
    """``d mean_k / d a`` ``(K, C_in*H*W)`` of the spatial means of ``channels`` for maps
    shaped like ``like`` ``(B, C_in, H, W)``: the same for every image (keep it across
    batches)."""
    w = conv.weight.to(like.dtype)
    h, wd = _conv(like[:1], w, conv).shape[2:]
    k = channels.numel()
    scale, _ = bn_affine(bn, w.shape[0], like)
    grad_out = like.new_zeros(k, w.shape[0], h, wd)
    grad_out[torch.arange(k), channels] = (scale[channels] / (h * wd)).view(k, 1, 1)
    return torch.nn.grad.conv2d_input(
        (k, *like.shape[1:]), w, grad_out, conv.stride, conv.padding, conv.dilation, conv.groups
    ).flatten(1)


def _mean_energies(
    a: torch.Tensor,
    conv: nn.Conv2d,
    bn: nn.BatchNorm2d | None,
    channels: torch.Tensor,
    g: torch.Tensor | None,
) -> dict[str, torch.Tensor]:
    g = mean_gradient(conv, bn, channels, a) if g is None else g
    gp, gm = g.clamp_min(0).T, (-g).clamp_min(0).T
    ap, am = a.flatten(1).clamp_min(0), (-a.flatten(1)).clamp_min(0)
    # the mean's activation: a . g plus the conv's bias and the BatchNorm's shift
    scale, shift = bn_affine(bn, conv.out_channels, a)
    base = shift[channels]
    if conv.bias is not None:
        base = base + conv.bias.to(a.dtype)[channels] * scale[channels]
    return {
        "e_plus": ap @ gp + am @ gm,
        "e_minus": ap @ gm + am @ gp,
        "e_plus_l2": (ap.square() @ gp.square() + am.square() @ gm.square()).sqrt(),
        "e_minus_l2": (ap.square() @ gm.square() + am.square() @ gp.square()).sqrt(),
        "activation": a.flatten(1) @ g.T + base,
    }


def _plain_conv(module: nn.Module) -> bool:
    return type(module) is nn.Conv2d and module.padding_mode == "zeros"


def _plain_bn(module: nn.Module) -> bool:
    return (
        type(module) is nn.BatchNorm2d
        and not module.training
        and module.running_mean is not None
        and module.running_var is not None
    )


def _same(a: Value, b: Value) -> bool:
    return a[0] is b[0] and a[1] == b[1]


def one_conv_path(
    model: nn.Module, unit_layer: str, example: torch.Tensor, attr_layer: str | None = None
) -> ConvPath | None:
    """The :class:`ConvPath` from ``attr_layer`` (None: the convolution's own input) to
    ``unit_layer`` when it is exactly one convolution (+ eval BatchNorm), else None ("not one
    convolution": use the batched path). ``example``: a normalised input batch."""
    ref = LayerRef.parse(unit_layer)
    resolve_module(model, ref)  # an unknown name is an error naming the closest ones
    seen = first_calls(model, example)
    if ref.module not in seen:
        return None
    value = seen[ref.module][1] if ref.port == "out" else seen[ref.module][0]
    modules = dict(model.named_modules())
    producers = [n for n, (_, out) in seen.items() if _same(out, value)]
    conv, bn = None, None
    for name in producers:
        if _plain_bn(modules[name]):
            feeds = [c for c, (_, out) in seen.items() if _same(out, seen[name][0])]
            hits = [c for c in feeds if _plain_conv(modules[c])]
            if hits:
                conv, bn = hits[0], name
                break
        if _plain_conv(modules[name]):
            conv = name
    if conv is None:
        return None
    if attr_layer is None:
        return ConvPath(conv, bn, f"{conv}:in")
    aref = LayerRef.parse(attr_layer)
    resolve_module(model, aref)
    if aref.module not in seen:
        return None
    attr_value = seen[aref.module][1] if aref.port == "out" else seen[aref.module][0]
    return ConvPath(conv, bn, attr_layer) if _same(attr_value, seen[conv][0]) else None
