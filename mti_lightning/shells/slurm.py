"""Preemption-safe runs on SLURM: Lightning's SLURM environment with auto-requeue.

When SLURM sends the requeue signal (the submitit launcher asks for USR2 ``signal_delay_s``
before the time limit; a preempting cluster or ``scancel --signal=USR2 JOB`` sends it too),
every process saves ``hpc_ckpt_N.ckpt`` into the run directory, rank 0 runs
``scontrol requeue``, and the requeued job's ``fit`` starts from that checkpoint. The job is
requeued with its original submission, so Hydra reruns the same job into the same directory.

Lightning saves that checkpoint inside its signal handler, wherever the step is: after Adam has
moved its moments but not the images, or after the images but before the step counter, so the
requeued job could resume from half a step and end elsewhere than an unstopped run.
:class:`RequeueAtStepEnd` holds the signal until the end of a step (where a step checkpoint is
whole) and hands it to Lightning's handler there.
"""

from __future__ import annotations

import signal
from types import FrameType
from typing import Any

import lightning as L
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


class RequeueAtStepEnd(L.Callback):
    """Hold the requeue signal until a step has ended, then run the handler it would have run.

    From the start of training the signal only notes itself; at the end of each step (the
    trainer factory puts this callback after the search's own, so it sees their work done) a
    noted signal goes to the handler that was installed (Lightning's: save ``hpc_ckpt``,
    requeue), and at the end of training too. With several processes they decide together,
    every ``every`` steps (one all-reduce of a flag), so all save at the same step.
    """

    def __init__(self, sig: signal.Signals, every: int = 10):
        self.sig, self.every = sig, max(1, every)
        self.pending = False
        self._handler: Any = None

    def on_train_start(self, trainer: L.Trainer, module: L.LightningModule) -> None:
        handler = signal.getsignal(self.sig)
        if callable(handler):
            self._handler = handler
            signal.signal(self.sig, self._note)

    def _note(self, signum: int, frame: FrameType | None) -> None:
        self.pending = True

    def _hand_over(self, trainer: L.Trainer, now: bool) -> None:
        if self._handler is None:
            return
        pending = self.pending
        if trainer.world_size > 1:
            if not now:
                return
            pending = trainer.strategy.reduce_boolean_decision(pending, all=False)
        if pending:
            self.pending = False
            self._handler(self.sig, None)

    def on_train_batch_end(self, trainer: L.Trainer, *args: Any) -> None:
        self._hand_over(trainer, trainer.global_step % self.every == 0)

    def on_train_end(self, trainer: L.Trainer, module: L.LightningModule) -> None:
        self._hand_over(trainer, True)
        if self._handler is not None:
            signal.signal(self.sig, self._handler)
            self._handler = None


def requeue_callbacks(plugins: list[SLURMEnvironment]) -> list[RequeueAtStepEnd]:
    """The callback that holds the requeue signal to a step's end, where ``plugins`` requeue."""
    return [
        RequeueAtStepEnd(env.requeue_signal)
        for env in plugins
        if env.auto_requeue and env.requeue_signal is not None
    ]
