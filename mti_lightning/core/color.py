"""Decorrelated colour: optimise in an opponent colour space, render in RGB.

Natural images' RGB channels are strongly correlated; their principal axes are close to a
luminance axis and two colour-opponent axes (red-green, blue-yellow), with most variance on
luminance (Ruderman, Cronin and Chiao 1998). Optimising in that basis with unit-variance
coordinates gives every direction an even footing. The basis and the relative scales below are
set from that finding, not measured from any data set.
"""

from __future__ import annotations

import math

import torch

_BASIS = torch.tensor(
    [
        [1 / math.sqrt(3), 1 / math.sqrt(3), 1 / math.sqrt(3)],
        [1 / math.sqrt(2), -1 / math.sqrt(2), 0.0],
        [1 / math.sqrt(6), 1 / math.sqrt(6), -2 / math.sqrt(6)],
    ]
)
# relative standard deviations of natural images along luminance, red-green, blue-yellow
_SCALES = torch.tensor([1.0, 0.3, 0.2])


def mixing_matrix() -> torch.Tensor:
    """3x3 matrix mapping decorrelated (unit-variance opponent) coordinates to RGB."""
    return _BASIS.t() * _SCALES


def to_rgb(x: torch.Tensor, matrix: torch.Tensor | None = None) -> torch.Tensor:
    """``(B, 3, H, W)`` opponent coordinates -> RGB (before the squashing nonlinearity).

    ``matrix`` is :func:`mixing_matrix` already on ``x``'s device (callers in the step loop
    keep it there: copying it from the host each step would block on a GPU).
    """
    m = (mixing_matrix() if matrix is None else matrix).to(x.device, x.dtype)
    # one batched matrix product on the flat pixels: the einsum's sums, without its copies
    return torch.matmul(m, x.flatten(2)).view(x.shape)


def from_rgb(x: torch.Tensor) -> torch.Tensor:
    """Inverse of :func:`to_rgb`."""
    m = torch.linalg.inv(mixing_matrix()).to(x.device, x.dtype)
    return torch.einsum("cr,brhw->bchw", m, x)
