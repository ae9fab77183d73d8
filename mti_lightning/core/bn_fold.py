"""Folding an eval BatchNorm into the convolution that feeds it.

In eval mode a BatchNorm is a per-channel affine map, so ``bn(conv(x))`` is one convolution
with scaled weights and a shifted bias: one memory-bound op less, forward and backward, on
every optimisation step. timm's ``BatchNormAct2d`` keeps its dropout and activation after
the fold, under the same names.
"""

from __future__ import annotations

import torch
from torch import nn

from mti_lightning.core.module_graph import direct_feeds, set_module


class ActAfterFold(nn.Module):
    """What is left of a BatchNorm+activation module (timm's ``BatchNormAct2d``) once its
    normalisation is folded away: its dropout and activation, under the same names."""

    def __init__(self, drop: nn.Module, act: nn.Module):
        super().__init__()
        self.drop = drop
        self.act = act

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.drop(x))


def _foldable_bn(module: nn.Module) -> bool:
    plain = type(module) is nn.BatchNorm2d
    with_act = isinstance(module, nn.BatchNorm2d) and type(module).__name__ == "BatchNormAct2d"
    return (
        (plain or with_act) and module.running_mean is not None and module.running_var is not None
    )


def conv_bn_pairs(model: nn.Module, example: torch.Tensor) -> list[tuple[str, str]]:
    """``(conv name, batchnorm name)`` where the BatchNorm's input is the conv's output tensor
    in a forward of ``example`` (so the conv's output feeds the BatchNorm directly)."""
    return direct_feeds(model, example, lambda m: type(m) is nn.Conv2d, _foldable_bn)


def fold_pair(model: nn.Module, conv_name: str, bn_name: str) -> None:
    """Fold eval BatchNorm ``bn_name`` into convolution ``conv_name`` of ``model`` (in place)."""
    conv = model.get_submodule(conv_name)
    bn = model.get_submodule(bn_name)
    with torch.no_grad():
        scale = torch.rsqrt(bn.running_var.double() + bn.eps)
        if bn.weight is not None:
            scale = scale * bn.weight.double()
        shift = -bn.running_mean.double() * scale
        if bn.bias is not None:
            shift = shift + bn.bias.double()
        if conv.bias is not None:
            shift = shift + conv.bias.double() * scale
        weight = conv.weight.double() * scale.view(-1, *([1] * (conv.weight.dim() - 1)))
        conv.weight = nn.Parameter(weight.to(conv.weight.dtype), requires_grad=False)
        conv.bias = nn.Parameter(shift.to(conv.weight.dtype), requires_grad=False)
    rest = ActAfterFold(bn.drop, bn.act) if type(bn) is not nn.BatchNorm2d else nn.Identity()
    set_module(model, bn_name, rest)
