"""A one-parameter LightningModule for the requeue tests, and (run as a script) the two-process
DDP run of ``test_slurm_requeue``: the requeue signal sent to rank 0 only, in step 2, each
process's handler writing the step it ran at into ``OUT/rank<R>.json``.

    python tests/shells/requeue_tiny.py OUT
"""

from __future__ import annotations

import json
import os
import signal
import sys

import lightning as L
import torch
from torch.utils.data import DataLoader

from mti_lightning.shells.slurm import RequeueAtStepEnd


class Tiny(L.LightningModule):
    """One parameter pulled towards 1 by Adam: its value tells the steps apart."""

    def __init__(self):
        super().__init__()
        self.p = torch.nn.Parameter(torch.zeros(3))

    def training_step(self, batch, batch_idx):
        return (self.p - 1).square().sum()

    def configure_optimizers(self):
        return torch.optim.Adam([self.p], lr=0.1)

    def train_dataloader(self):
        return DataLoader(list(range(40)), batch_size=None)


class SendAt(L.Callback):
    """Sends the requeue signal to this process (rank ``rank`` only) in step ``at``, after the
    backward and before the optimiser's step (where Lightning's own handler would save half a
    step), and keeps each step's parameter at its end."""

    def __init__(self, at: int, rank: int = 0):
        self.at, self.rank, self.ends = at, rank, {}

    def on_before_optimizer_step(self, trainer, module, optimizer):
        if trainer.global_step == self.at and trainer.global_rank == self.rank:
            os.kill(os.getpid(), signal.SIGUSR2)

    def on_train_batch_end(self, trainer, module, *args):
        self.ends[trainer.global_step] = module.p.detach().clone()


def quiet_trainer(root, max_steps: int, callbacks: list, **options) -> L.Trainer:
    """A Trainer that writes nothing but what the test reads."""
    return L.Trainer(
        default_root_dir=root,
        max_steps=max_steps,
        callbacks=callbacks,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        **options,
    )


def main(out: str) -> None:
    model = Tiny()

    def handler(signum, frame):
        rank = model.trainer.global_rank
        with open(f"{out}/rank{rank}.json", "a") as f:
            f.write(json.dumps({"step": model.trainer.global_step, "p": model.p.tolist()}) + "\n")

    signal.signal(signal.SIGUSR2, handler)
    callbacks = [SendAt(2), RequeueAtStepEnd(signal.SIGUSR2, every=5)]
    trainer = quiet_trainer(out, 12, callbacks, accelerator="cpu", devices=2, strategy="ddp")
    trainer.fit(model)


if __name__ == "__main__":
    main(sys.argv[1])
