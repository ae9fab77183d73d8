"""Sparse synthetic data for the toy models of superposition, drawn on the fly.

- abs: each of ``n`` inputs is non-zero with probability ``S`` and then uniform in [-1, 1];
  the target is ``|x|``.
- xor: each of ``n`` input pairs is active with probability ``S``; an active pair takes one of
  the three non-zero binary patterns (01, 10, 11) uniformly, an inactive pair is (0, 0); the
  target is the XOR of each pair. Excluding (0, 0) from the active patterns makes ``S`` the
  actual fraction of non-zero pairs.

Sparsity is what makes superposition pay: two features rarely co-occur, so sharing a hidden
unit rarely costs interference. Every draw comes from a seeded ``torch.Generator``.
"""

from __future__ import annotations

from collections.abc import Iterator

import torch
from torch.utils.data import IterableDataset

from mti_lightning.core.errors import MTIConfigError
from mti_lightning.core.zoo.toys import TOY_KINDS

DEFAULT_SPARSITY: dict[str, float] = {"abs": 0.01, "xor": 0.05}
XOR_PATTERNS = torch.tensor([[0.0, 1.0], [1.0, 0.0], [1.0, 1.0]])


def _check(kind: str, n: int, sparsity: float, batch_size: int) -> None:
    if kind not in TOY_KINDS:
        raise MTIConfigError(f"unknown toy kind {kind!r}; valid: {', '.join(TOY_KINDS)}")
    if n < 1:
        raise MTIConfigError(f"n (features or pairs) must be >= 1, got {n}")
    if not 0.0 < sparsity <= 1.0:
        raise MTIConfigError(
            f"sparsity S (probability a feature is active) must be in (0, 1], got {sparsity}"
        )
    if batch_size < 1:
        raise MTIConfigError(f"batch_size must be >= 1, got {batch_size}")


def abs_target(x: torch.Tensor) -> torch.Tensor:
    """``|x|`` per input."""
    return x.abs()


def xor_target(x: torch.Tensor) -> torch.Tensor:
    """XOR of each consecutive input pair ``(B, 2n) -> (B, n)`` (``a + b - 2ab`` on bits)."""
    a, b = x[:, 0::2], x[:, 1::2]
    return a + b - 2 * a * b


def sample_abs(
    batch_size: int, n: int, sparsity: float, generator: torch.Generator
) -> tuple[torch.Tensor, torch.Tensor]:
    """A batch ``(x, |x|)`` of ``n`` sparse inputs uniform in [-1, 1] where active."""
    _check("abs", n, sparsity, batch_size)
    active = torch.rand(batch_size, n, generator=generator) < sparsity
    values = torch.rand(batch_size, n, generator=generator) * 2 - 1
    x = torch.where(active, values, torch.zeros(()))
    return x, abs_target(x)


def sample_xor(
    batch_size: int, n_pairs: int, sparsity: float, generator: torch.Generator
) -> tuple[torch.Tensor, torch.Tensor]:
    """A batch ``(x, xor)`` of ``n_pairs`` sparse binary pairs (active ones non-zero)."""
    _check("xor", n_pairs, sparsity, batch_size)
    active = torch.rand(batch_size, n_pairs, 1, generator=generator) < sparsity
    pattern = torch.randint(0, len(XOR_PATTERNS), (batch_size, n_pairs), generator=generator)
    x = (XOR_PATTERNS[pattern] * active).flatten(1)
    return x, xor_target(x)


def sample_toy(
    kind: str, batch_size: int, n: int, sparsity: float, generator: torch.Generator
) -> tuple[torch.Tensor, torch.Tensor]:
    """A batch of the ``kind`` toy's data (``n`` features for abs, ``n`` pairs for xor)."""
    _check(kind, n, sparsity, batch_size)
    sample = sample_abs if kind == "abs" else sample_xor
    return sample(batch_size, n, sparsity, generator)


class SparseToyStream(IterableDataset):
    """An endless stream of ``(x, target)`` batches; every iteration restarts from ``seed``.

    Use with ``DataLoader(stream, batch_size=None)``: the stream already yields batches.
    """

    def __init__(self, kind: str, n: int, sparsity: float, batch_size: int, seed: int) -> None:
        super().__init__()
        _check(kind, n, sparsity, batch_size)
        self.kind, self.n, self.sparsity = kind, n, sparsity
        self.batch_size, self.seed = batch_size, seed

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        gen = torch.Generator().manual_seed(self.seed)
        while True:
            yield sample_toy(self.kind, self.batch_size, self.n, self.sparsity, gen)
