"""ReLU then max-pool, run as max-pool then ReLU: the same values and gradients on a quarter
of the elements.

``maxpool(relu(x)) == relu(maxpool(x))`` because ReLU is monotone, and the gradients agree
too: where a window's maximum is positive both route it to the same element, where it is not
both give zero. ResNet-style stems (conv, BN, ReLU, 3x3 stride-2 max-pool) and VGG blocks run
their ReLU, forward and backward, on the full-resolution map; after the pool it runs on a
quarter of it (on a CPU the stem ReLU's backward alone was 3% of an inversion step).
"""

from __future__ import annotations

import torch
from torch import nn

from mti_lightning.core.module_graph import direct_feeds, set_module


class PoolThenAct(nn.Module):
    """A max-pool followed by the ReLU that used to come before it (under the pool's name, so
    a probe of the pool's output reads the same value)."""

    def __init__(self, pool: nn.Module, act: nn.Module):
        super().__init__()
        self.pool = pool
        self.act = act

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.pool(x))


def _plain_max_pool(module: nn.Module) -> bool:
    return type(module) is nn.MaxPool2d and not module.return_indices


def relu_pool_pairs(model: nn.Module, example: torch.Tensor) -> list[tuple[str, str]]:
    """``(relu name, pool name)`` where a max-pool's input *is* a ReLU's output tensor in a
    forward of ``example``."""
    return direct_feeds(model, example, lambda m: type(m) is nn.ReLU, _plain_max_pool)


def move_relu_after_pool(model: nn.Module, relu_name: str, pool_name: str) -> None:
    """Replace the ReLU by an identity and the pool by ``PoolThenAct`` (in place)."""
    relu = model.get_submodule(relu_name)
    pool = model.get_submodule(pool_name)
    set_module(model, relu_name, nn.Identity())
    set_module(model, pool_name, PoolThenAct(pool, relu))
