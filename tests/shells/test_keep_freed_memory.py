"""Runs built by ``make_trainer`` keep freed memory in the heap while they last, and only then."""

from __future__ import annotations

import lightning as L
import pytest
import torch

from mti_lightning.core.heap import heap_reuse_available
from mti_lightning.shells.heap import KeepFreedMemory
from mti_lightning.shells.trainer import make_trainer

pytestmark = pytest.mark.skipif(not heap_reuse_available(), reason="needs glibc")

GIB = 2**30


class _Steps(L.LightningModule):
    """One parameter, a quadratic loss; fails at step ``fail_at`` if given."""

    def __init__(self, served_by_mmap, fail_at: int = -1):
        super().__init__()
        self.served_by_mmap = served_by_mmap
        self.x = torch.nn.Parameter(torch.ones(4))
        self.fail_at = fail_at
        self.seen: list[bool] = []

    def train_dataloader(self):
        return torch.utils.data.DataLoader(torch.zeros(8, 1), batch_size=1)

    def training_step(self, batch, batch_idx):
        if batch_idx == self.fail_at:
            raise RuntimeError("diverged")
        # a fresh block each step: from the heap while the run holds it
        self.seen.append(self.served_by_mmap(GIB + batch_idx * 4096))
        return (self.x**2).sum()

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.1)


def test_a_cpu_fit_holds_the_heap_and_releases_it(tmp_path, served_by_mmap) -> None:
    trainer = make_trainer(tmp_path, 3)
    assert any(isinstance(c, KeepFreedMemory) for c in trainer.callbacks)
    module = _Steps(served_by_mmap)
    trainer.fit(module)
    assert module.seen == [False, False, False]
    assert served_by_mmap(3 * GIB)


def test_a_failed_fit_releases_it_too(tmp_path, served_by_mmap) -> None:
    module = _Steps(served_by_mmap, fail_at=2)
    with pytest.raises(RuntimeError, match="diverged"):
        make_trainer(tmp_path, 5).fit(module)
    assert module.seen == [False, False]
    assert served_by_mmap(3 * GIB + 4096)
