"""Redirected ReLU: lets gradient through a silent ReLU when it would switch the unit on.

A post-activation target that starts at zero everywhere gets no gradient through a plain ReLU
and the image never moves. During the first steps, the redirected backward also passes the
gradient where the input is negative but the loss wants the output to grow.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch
from torch import nn


class _RedirectedReLU(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: torch.Tensor) -> torch.Tensor:
        ctx.save_for_backward(x)
        return x.clamp_min(0)

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:
        (x,) = ctx.saved_tensors
        return grad * ((x > 0) | (grad < 0)).to(grad.dtype)


def redirected_relu(x: torch.Tensor) -> torch.Tensor:
    """ReLU forward; backward also passes gradient that would raise a negative input."""
    return _RedirectedReLU.apply(x)


@contextmanager
def redirect_relus(model: nn.Module, active: bool = True) -> Iterator[None]:
    """Within the block every ``nn.ReLU`` of ``model`` uses the redirected backward."""
    if not active:
        yield
        return
    relus = [m for m in model.modules() if isinstance(m, nn.ReLU)]
    for m in relus:
        m.forward = redirected_relu
    try:
        yield
    finally:
        for m in relus:
            del m.forward
