"""The one optimisation engine: every optimisation of images in the package runs here.

:func:`optimise` fits an :class:`MTISearch` on a Trainer from the shared factory
(``shells/trainer.py``), fed by the draw stream of ``shells/draws.py`` (one seeding rule:
``step_seed``). Searches, the +/- inversions after a search, atlas icons, the reports'
visualisations and the toys' input-vector searches all come here, so strategy, precision, the
fast step network, checkpoints and logging apply to each of them the same way.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import lightning as L

from mti_lightning.core.config_schema import MTIConfig
from mti_lightning.shells.draws import DrawDataModule
from mti_lightning.shells.search import MTISearch
from mti_lightning.shells.trainer import make_trainer


@dataclass(frozen=True)
class EngineOptions:
    """How the engine runs (the ``trainer`` config group and ``checkpoint.every_n_steps``);
    the defaults are ``conf/trainer/cpu.yaml``'s, with checkpoints off."""

    accelerator: str = "cpu"
    devices: Any = 1
    num_nodes: int = 1
    strategy: str = "auto"
    precision: str = "32"
    log_every_n_steps: int = 10
    progress_bar: bool = False
    requeue_signal: str | None = "USR2"
    checkpoint_every: int = 0

    @classmethod
    def from_config(cls, cfg: MTIConfig) -> EngineOptions:
        """The options a config's ``trainer`` and ``checkpoint`` groups give."""
        t = cfg.trainer
        return cls(
            accelerator=t.accelerator,
            devices=t.devices,
            num_nodes=t.num_nodes,
            strategy=t.strategy,
            precision=str(t.precision),
            log_every_n_steps=t.log_every_n_steps,
            progress_bar=t.progress_bar,
            requeue_signal=t.requeue_signal,
            checkpoint_every=cfg.checkpoint.every_n_steps,
        )


# one process on the CPU, full precision, no checkpoints
DEFAULT_OPTIONS = EngineOptions()


def optimise(
    search: MTISearch,
    steps: int,
    draws: int,
    seed: int,
    run_dir: str | Path,
    options: EngineOptions = DEFAULT_OPTIONS,
    logger: Any = False,
    callbacks: Sequence[L.Callback] = (),
    resume: bool = False,
) -> tuple[L.Trainer, str | None]:
    """Fit ``search`` for ``steps`` steps of ``draws`` transform draws each, seeded by
    ``seed``, in ``run_dir``; ``resume`` continues from ``run_dir/checkpoints/last.ckpt``
    when it exists. Returns the trainer and the checkpoint it resumed from (a SLURM requeue
    resumes from its own, which the trainer reports)."""
    trainer = make_trainer(
        run_dir,
        steps,
        accelerator=options.accelerator,
        devices=options.devices,
        num_nodes=options.num_nodes,
        strategy=options.strategy,
        precision=options.precision,
        logger=logger,
        callbacks=list(callbacks),
        checkpoint_every=options.checkpoint_every,
        log_every_n_steps=options.log_every_n_steps,
        progress_bar=options.progress_bar,
        requeue_signal=options.requeue_signal,
    )
    last = Path(run_dir) / "checkpoints" / "last.ckpt"
    ckpt = str(last) if resume and last.exists() else None
    trainer.fit(search, datamodule=DrawDataModule(search.transform, draws, seed), ckpt_path=ckpt)
    return trainer, ckpt or trainer.ckpt_path


def close_process_group() -> None:
    """End a DDP run's process group in order, once every process has finished its work (a
    barrier, then destroy): left to the interpreter's exit, gloo's teardown can abort a process
    whose peer is still talking to it ("terminate called without an active exception")."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        dist.barrier()
        dist.destroy_process_group()
