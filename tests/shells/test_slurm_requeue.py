"""The requeue signal option (``shells/slurm.py``): names, bad values, and no SLURM plugin
outside a SLURM task. The requeue itself runs on a real cluster in tests/cluster."""

from __future__ import annotations

import signal

import pytest

from mti_lightning.core.errors import MTIConfigError
from mti_lightning.shells.slurm import requeue_signal, slurm_plugins
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
