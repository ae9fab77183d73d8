"""Toy models of superposition (Elhage et al. 2022) whose units we probe for tension.

Two one-hidden-layer ReLU networks with fewer hidden units than their task needs, so features
must share hidden units:

- ``AbsToy``: ``n`` sparse inputs in [-1, 1], target ``|x|``. Each ``|x_i|`` needs two ReLUs
  (``relu(x) + relu(-x)``), so ``m < 2n`` hidden units force superposition.
- ``XorToy``: ``n_pairs`` sparse binary input pairs, target the XOR of each pair. Each XOR
  needs two ReLUs with a bias (``relu(a + b) - 2 relu(a + b - 1)``), so ``m < 2 n_pairs``
  forces superposition.

Every op is its own named submodule (``hidden``, ``hidden_act``, ``out``, ``out_act``) so the
core's probes address them: ``hidden`` / ``out`` are the pre-activations, ``hidden:in`` is the
input vector and ``hidden_act`` the hidden layer after its ReLU. Both toys end in a ReLU: the
targets are non-negative, and the output ReLU lets a unit clip the (negative) interference it
receives from other features with a negative bias, the mechanism that makes superposition
cheap in these toys; a linear output would have to cancel interference exactly instead.

Initialisation: the output weights start non-negative and the output bias at zero. With an
output ReLU, a unit whose pre-activation starts negative on its own feature never gets a
gradient and its feature is never learned (with PyTorch's default init about one feature in
three dies that way); starting every output alive avoids it.
"""

from __future__ import annotations

import torch
from torch import nn

from mti_lightning.core.errors import MTIConfigError

TOY_KINDS: tuple[str, ...] = ("abs", "xor")


class _Toy(nn.Module):
    """``out_act(out(hidden_act(hidden(x))))`` on flat input vectors ``(B, input_dim)``."""

    input_range: tuple[float, float] = (-1.0, 1.0)

    def __init__(self, input_dim: int, n_features: int, m: int, hidden_bias: bool) -> None:
        super().__init__()
        if input_dim < 1 or m < 1:
            raise MTIConfigError(f"toy sizes must be positive, got inputs={input_dim}, m={m}")
        self.input_dim, self.n_features, self.m = input_dim, n_features, m
        self.hidden = nn.Linear(input_dim, m, bias=hidden_bias)
        self.hidden_act = nn.ReLU()
        self.out = nn.Linear(m, n_features, bias=True)
        self.out_act = nn.ReLU()
        with torch.no_grad():
            self.out.weight.abs_()
            self.out.bias.zero_()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.out_act(self.out(self.hidden_act(self.hidden(x))))

    def feature_of_input(self, i: int) -> int:
        """Which feature input ``i`` belongs to."""
        return i


class AbsToy(_Toy):
    """``n`` inputs in [-1, 1] -> ``m`` ReLU units (no bias) -> ``n`` ReLU outputs ~ ``|x|``."""

    input_range = (-1.0, 1.0)

    def __init__(self, n: int = 6, m: int = 8) -> None:
        super().__init__(n, n, m, hidden_bias=False)


class XorToy(_Toy):
    """``2 n_pairs`` binary inputs -> ``m`` ReLU units (with bias) -> ``n_pairs`` XOR outputs."""

    input_range = (0.0, 1.0)

    def __init__(self, n_pairs: int = 6, m: int = 8) -> None:
        super().__init__(2 * n_pairs, n_pairs, m, hidden_bias=True)

    def feature_of_input(self, i: int) -> int:
        return i // 2


def build_toy(kind: str, n: int, m: int) -> AbsToy | XorToy:
    """The toy of ``kind`` (``abs``: ``n`` features; ``xor``: ``n`` pairs) with ``m`` units."""
    if kind == "abs":
        return AbsToy(n, m)
    if kind == "xor":
        return XorToy(n, m)
    raise MTIConfigError(f"unknown toy kind {kind!r}; valid: {', '.join(TOY_KINDS)}")
