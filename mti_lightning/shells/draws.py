"""A datamodule that streams transform draws, one batch per optimisation step.

Step ``s`` has a global batch of draws sampled from ``(seed, s)`` alone; process ``r`` of ``W``
takes slice ``r``. So DDP over W processes sees exactly the draws (and noise) of one process
with W times the draws, and a resumed run continues the same stream from its global step.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import lightning as L
import torch
from torch.utils.data import DataLoader, IterableDataset

from mti_lightning.core.errors import MTIConfigError
from mti_lightning.core.transforms import TransformConfig, sample_draws

_SEED_STRIDE = 1_000_003


def step_seed(seed: int, step: int) -> int:
    """The seed of step ``step``'s draws and noise."""
    return (seed * _SEED_STRIDE + step) % (2**62)


class DrawStream(IterableDataset):
    """Endless stream of this process's draws, starting at ``start_step``."""

    def __init__(
        self,
        transform: TransformConfig,
        total_draws: int,
        seed: int,
        rank: int = 0,
        world_size: int = 1,
        start_step: int = 0,
    ):
        if total_draws % world_size:
            raise MTIConfigError(
                f"draws={total_draws} do not split over {world_size} processes; "
                f"use a multiple of {world_size}"
            )
        self.transform, self.total, self.seed = transform, total_draws, seed
        self.rank, self.world_size, self.start_step = rank, world_size, start_step

    def batch(self, step: int) -> dict[str, Any]:
        """The draws of ``step`` for this process."""
        gen = torch.Generator().manual_seed(step_seed(self.seed, step))
        draws = sample_draws(self.transform, self.total, gen)
        per = self.total // self.world_size
        offset = self.rank * per
        return {
            "draws": draws[offset : offset + per],
            "step": step,
            "noise_seed": step_seed(self.seed, step),
            "offset": offset,
            "total": self.total,
        }

    def __iter__(self) -> Iterator[dict[str, Any]]:
        step = self.start_step
        while True:
            yield self.batch(step)
            step += 1


def _collate(item: dict[str, Any]) -> dict[str, Any]:
    return item


class DrawDataModule(L.LightningDataModule):
    """Streams draws to ``MTISearch.training_step``; knows its place after a resume."""

    def __init__(self, transform: TransformConfig, draws: int = 8, seed: int = 0):
        super().__init__()
        if draws < 1:
            raise MTIConfigError(f"draws={draws}; need at least 1 draw per step")
        self.transform, self.draws, self.seed = transform, draws, seed

    def train_dataloader(self) -> DataLoader:
        trainer = self.trainer
        stream = DrawStream(
            self.transform,
            self.draws,
            self.seed,
            rank=trainer.global_rank if trainer else 0,
            world_size=trainer.world_size if trainer else 1,
            start_step=trainer.global_step if trainer else 0,
        )
        return DataLoader(stream, batch_size=None, collate_fn=_collate, num_workers=0)
