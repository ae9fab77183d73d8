"""The requeue signal option (``shells/slurm.py``): names, bad values, no SLURM plugin outside
a SLURM task, and the signal held to the end of a step. The requeue itself runs on a real
cluster in tests/cluster."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from requeue_tiny import SendAt, Tiny, quiet_trainer

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


def test_the_requeue_signal_is_handed_over_at_the_end_of_its_step(tmp_path):
    """A signal sent mid-step reaches the installed handler (Lightning's, on a cluster) once,
    at the end of that step: the handler sees the step's counter and images complete."""
    model = Tiny()
    seen = []

    def handler(signum, frame):
        seen.append((signum, model.trainer.global_step, model.p.detach().clone()))

    previous = signal.signal(signal.SIGUSR2, handler)
    try:
        sender = SendAt(4)
        quiet_trainer(tmp_path, 8, [sender, RequeueAtStepEnd(signal.SIGUSR2)]).fit(model)
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


def test_under_ddp_every_process_hands_the_signal_over_at_the_same_step(tmp_path):
    """Two DDP processes (gloo), the signal sent to rank 0 only, in step 2: both hand it over
    once, at the first agreed step after it (step 5 with ``every=5``), with equal images."""
    env = {**os.environ, "PYTHONWARNINGS": "ignore"}
    for key in ("SLURM_NTASKS", "SLURM_JOB_NAME", "SLURM_JOB_ID"):
        env.pop(key, None)
    done = subprocess.run(
        [sys.executable, str(Path(__file__).with_name("requeue_tiny.py")), str(tmp_path)],
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
