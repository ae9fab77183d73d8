"""Preemption-safe runs on SLURM: Lightning's SLURM environment with auto-requeue.

When SLURM sends the requeue signal (the submitit launcher asks for USR2 ``signal_delay_s``
before the time limit; a preempting cluster or ``scancel --signal=USR2 JOB`` sends it too),
every process saves ``hpc_ckpt_N.ckpt`` into the run directory, rank 0 runs
``scontrol requeue``, and the requeued job's ``fit`` starts from that checkpoint. The job is
requeued with its original submission, so Hydra reruns the same job into the same directory.
"""

from __future__ import annotations

import signal

from lightning.fabric.plugins.environments import SLURMEnvironment

from mti_lightning.core.errors import MTIConfigError

SIGNALS = ("USR1", "USR2", "TERM", "INT", "HUP", "CONT", "URG", "XCPU")


def requeue_signal(name: str | None) -> signal.Signals | None:
    """The signal named ``name`` (``USR2``, ``SIGUSR2``), or None for no auto-requeue."""
    if name is None or str(name).lower() in ("null", "none", ""):
        return None
    key = str(name).upper().removeprefix("SIG")
    if key not in SIGNALS:
        raise MTIConfigError(
            f"trainer.requeue_signal={name!r}; valid: {', '.join(SIGNALS)} or null (no requeue)"
        )
    return signal.Signals[f"SIG{key}"]


def slurm_plugins(name: str | None) -> list[SLURMEnvironment]:
    """``[SLURMEnvironment]`` requeueing on signal ``name`` when this process is a SLURM task,
    ``[]`` elsewhere (Lightning then picks its environment itself)."""
    sig = requeue_signal(name)
    if not SLURMEnvironment.detect():
        return []
    if sig is None:
        return [SLURMEnvironment(auto_requeue=False)]
    # Lightning installs its handler only on a signal without one; submitit's job wrapper puts
    # its own checkpoint-and-requeue handler on USR2, which would rerun the job from scratch
    signal.signal(sig, signal.SIG_DFL)
    return [SLURMEnvironment(auto_requeue=True, requeue_signal=sig)]
