"""The requeue signal option (``shells/slurm.py``): names, bad values, no SLURM plugin outside
a SLURM task, and the signal held to the end of a step. The requeue itself runs on a real
cluster in tests/cluster."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys

import lightning as L
import pytest
import torch
from torch.utils.data import DataLoader

from mti_lightning.core.errors import MTIConfigError
from mti_lightning.shells.slurm import RequeueAtStepEnd, requeue_signal, slurm_plugins
from mti_lightning.shells.trainer import make_trainer


@pytest.mark.parametrize("name", ["USR2", "SIGUSR2", "usr2"])
def test_signal_names(name):
    assert requeue_signal(name) is signal.SIGUSR2


@pytest.mark.parametrize("name", [None, "null", ""])
def test_no_requeue(name):
    assert requeue_signal(name) is None


def test_a_bad_signal_is_a_clear_error_naming_the_key(tmp_path):
    with pytest.raises(MTIConfigError, match=r"trainer.requeue_signal='KILL'; valid: USR1, USR2"):
        make_trainer(tmp_path, 2, requeue_signal="KILL")


def test_outside_slurm_lightning_chooses_the_environment(monkeypatch):
    for key in ("SLURM_NTASKS", "SLURM_JOB_NAME"):
        monkeypatch.delenv(key, raising=False)
    assert slurm_plugins("USR2") == []
    assert signal.getsignal(signal.SIGUSR2) is signal.SIG_DFL


class _Tiny(L.LightningModule):
    """One parameter pulled towards 1 by Adam: its value tells the steps apart."""

    def __init__(self):
        super().__init__()
        self.p = torch.nn.Parameter(torch.zeros(3))

    def training_step(self, batch, batch_idx):
        return (self.p - 1).square().sum()

    def configure_optimizers(self):
        return torch.optim.Adam([self.p], lr=0.1)

    def train_dataloader(self):
        return DataLoader(list(range(20)), batch_size=None)


class _Signal(L.Callback):
    """Sends the requeue signal to this process in step ``at``, after the backward and before
    the optimiser's step (where Lightning's own handler would save half a step), and keeps
    each step's parameter at its end."""

    def __init__(self, at: int):
        self.at, self.ends = at, {}

    def on_before_optimizer_step(self, trainer, module, optimizer):
        if trainer.global_step == self.at:
            os.kill(os.getpid(), signal.SIGUSR2)

    def on_train_batch_end(self, trainer, module, *args):
        self.ends[trainer.global_step] = module.p.detach().clone()


def test_the_requeue_signal_is_handed_over_at_the_end_of_its_step(tmp_path):
    """A signal sent mid-step reaches the installed handler (Lightning's, on a cluster) once,
    at the end of that step: the handler sees the step's counter and images complete."""
    model = _Tiny()
    seen = []

    def handler(signum, frame):
        seen.append((signum, model.trainer.global_step, model.p.detach().clone()))

    previous = signal.signal(signal.SIGUSR2, handler)
    try:
        sender = _Signal(at=4)
        trainer = L.Trainer(
            default_root_dir=tmp_path,
            max_steps=8,
            callbacks=[sender, RequeueAtStepEnd(signal.SIGUSR2)],
            logger=False,
            enable_checkpointing=False,
            enable_progress_bar=False,
            enable_model_summary=False,
        )
        trainer.fit(model)
        assert signal.getsignal(signal.SIGUSR2) is handler  # put back after training
    finally:
        signal.signal(signal.SIGUSR2, previous)
    assert len(seen) == 1
    signum, step, p = seen[0]
    assert signum == signal.SIGUSR2 and step == 5
    assert torch.equal(p, sender.ends[5]) and not torch.equal(p, sender.ends[4])


def test_the_trainer_holds_the_signal_where_lightning_requeues(monkeypatch, tmp_path):
    monkeypatch.setenv("SLURM_NTASKS", "1")
    monkeypatch.setenv("SLURM_JOB_NAME", "mti")
    try:
        trainer = make_trainer(tmp_path, 2, requeue_signal="USR2")
        held = [cb for cb in trainer.callbacks if isinstance(cb, RequeueAtStepEnd)]
        assert [cb.sig for cb in held] == [signal.SIGUSR2]
        assert not [cb for cb in make_trainer(tmp_path, 2, requeue_signal=None).callbacks
                    if isinstance(cb, RequeueAtStepEnd)]
    finally:
        signal.signal(signal.SIGUSR2, signal.SIG_DFL)


DDP_SCRIPT = '''
import json, os, signal, sys
import lightning as L
import torch
from torch.utils.data import DataLoader
from mti_lightning.shells.slurm import RequeueAtStepEnd

out = sys.argv[1]


class Tiny(L.LightningModule):
    def __init__(self):
        super().__init__()
        self.p = torch.nn.Parameter(torch.zeros(3))

    def training_step(self, batch, batch_idx):
        return (self.p - 1).square().sum()

    def configure_optimizers(self):
        return torch.optim.Adam([self.p], lr=0.1)

    def train_dataloader(self):
        return DataLoader(list(range(40)), batch_size=None)


class Send(L.Callback):
    def on_before_optimizer_step(self, trainer, module, optimizer):
        if trainer.global_rank == 0 and trainer.global_step == 2:
            os.kill(os.getpid(), signal.SIGUSR2)


model = Tiny()


def handler(signum, frame):
    t = model.trainer
    with open(f"{out}/rank{t.global_rank}.json", "a") as f:
        f.write(json.dumps({"step": t.global_step, "p": model.p.tolist()}) + "\\n")


signal.signal(signal.SIGUSR2, handler)
trainer = L.Trainer(
    default_root_dir=out, max_steps=12, accelerator="cpu", devices=2, strategy="ddp",
    callbacks=[Send(), RequeueAtStepEnd(signal.SIGUSR2, every=5)], logger=False,
    enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
)
trainer.fit(model)
'''


def test_under_ddp_every_process_hands_the_signal_over_at_the_same_step(tmp_path):
    """Two DDP processes (gloo), the signal sent to rank 0 only, in step 2: both hand it over
    once, at the first agreed step after it (step 5 with ``every=5``), with equal images."""
    script = tmp_path / "ddp_requeue.py"
    script.write_text(DDP_SCRIPT)
    env = {**os.environ, "PYTHONWARNINGS": "ignore"}
    for key in ("SLURM_NTASKS", "SLURM_JOB_NAME", "SLURM_JOB_ID"):
        env.pop(key, None)
    done = subprocess.run(
        [sys.executable, str(script), str(tmp_path)],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    seen = [
        [json.loads(line) for line in (tmp_path / f"rank{r}.json").read_text().splitlines()]
        for r in (0, 1)
    ]
    assert [[s["step"] for s in rank] for rank in seen] == [[5], [5]]
    assert seen[0][0]["p"] == seen[1][0]["p"]
