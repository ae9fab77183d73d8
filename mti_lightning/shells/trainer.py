"""The one trainer factory (searches, data passes, training, the toys) built from plain options,
with clear errors for bad combinations."""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import lightning as L
import torch
from lightning.pytorch.callbacks import ModelCheckpoint

from mti_lightning.core.errors import MTIConfigError
from mti_lightning.shells.checkpoint_io import AtomicCheckpointIO
from mti_lightning.shells.heap import KeepFreedMemory
from mti_lightning.shells.slurm import requeue_callbacks, slurm_plugins

PRECISIONS = ("32", "32-true", "bf16-mixed", "16-mixed", "bf16-true", "64")
ACCELERATORS = ("cpu", "gpu", "cuda", "mps", "auto")


def check_trainer_options(accelerator: str, precision: str, devices: Any) -> None:
    """Reject unknown or incompatible options before any work starts."""
    if str(precision) not in PRECISIONS:
        raise MTIConfigError(f"precision {precision!r}; valid: {', '.join(PRECISIONS)}")
    if accelerator not in ACCELERATORS:
        raise MTIConfigError(f"accelerator {accelerator!r}; valid: {', '.join(ACCELERATORS)}")
    if accelerator in ("gpu", "cuda") and not torch.cuda.is_available():
        raise MTIConfigError(
            f"accelerator={accelerator} but no CUDA device is visible; use accelerator=cpu"
        )
    on_cpu = accelerator == "cpu" or (accelerator == "auto" and not torch.cuda.is_available())
    if on_cpu and str(precision) == "16-mixed":
        raise MTIConfigError(
            "precision=16-mixed needs a GPU; on CPU use precision=32 or precision=bf16-mixed"
        )
    if on_cpu and str(precision) == "bf16-mixed" and not cpu_has_bf16():
        warnings.warn(
            "precision=bf16-mixed on a CPU without bf16 instructions (AVX512-BF16 or AMX): "
            "bf16 is emulated there, about 10x slower than precision=32",
            stacklevel=2,
        )


NATIVE_BF16_FLAGS = ("avx512_bf16", "amx_bf16")


def cpu_flags(cpuinfo: str | Path = "/proc/cpuinfo") -> set[str]:
    """The instruction-set flags the kernel reports for this CPU (empty where unreadable)."""
    try:
        text = Path(cpuinfo).read_text()
    except OSError:
        return set()
    for line in text.splitlines():
        if line.startswith("flags"):
            return set(line.partition(":")[2].split())
    return set()


def cpu_has_bf16(flags: set[str] | None = None) -> bool:
    """Whether this CPU computes bf16 convolutions and matmuls in hardware: bf16 instructions
    (AVX512-BF16, AMX) in its flags, or oneDNN's own test (AVX-512 cores)."""
    flags = cpu_flags() if flags is None else flags
    if any(f in flags for f in NATIVE_BF16_FLAGS):
        return True
    try:
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):
        return False


def make_trainer(
    run_dir: str | Path,
    max_steps: int,
    accelerator: str = "cpu",
    devices: Any = 1,
    num_nodes: int = 1,
    strategy: str = "auto",
    precision: str = "32",
    logger: Any = False,
    callbacks: Sequence[L.Callback] = (),
    checkpoint_every: int = 0,
    log_every_n_steps: int = 10,
    progress_bar: bool = False,
    requeue_signal: str | None = "USR2",
    **options: Any,
) -> L.Trainer:
    """A Trainer that runs ``max_steps`` optimisation steps of a search in ``run_dir``; as a
    SLURM task it checkpoints and requeues itself on ``requeue_signal`` (``shells/slurm.py``).

    ``max_steps=-1``: no step limit (a data pass's ``predict``, a training by epochs).
    ``options``: further ``L.Trainer`` arguments, replacing a search's defaults where they
    differ (``max_epochs``, ``deterministic``, ``inference_mode``, ``benchmark``, ...).
    """
    if max_steps < 1 and max_steps != -1:
        raise MTIConfigError(f"steps={max_steps}; a search needs at least 1 step")
    check_trainer_options(accelerator, str(precision), devices)
    slurm = slurm_plugins(requeue_signal)
    callbacks = [*callbacks, KeepFreedMemory(), *requeue_callbacks(slurm)]
    if checkpoint_every > 0:
        callbacks.append(
            ModelCheckpoint(
                dirpath=Path(run_dir) / "checkpoints",
                filename="step{step:06d}",
                every_n_train_steps=checkpoint_every,
                save_last=True,
                save_top_k=1,
                auto_insert_metric_name=False,
            )
        )
    arguments: dict[str, Any] = {
        "default_root_dir": str(run_dir),
        "max_steps": max_steps,
        "max_epochs": 1,
        "accelerator": accelerator,
        "devices": devices,
        "num_nodes": num_nodes,
        "strategy": strategy,
        "precision": str(precision),
        "plugins": [*slurm, AtomicCheckpointIO()],
        "logger": logger,
        "callbacks": callbacks,
        "enable_checkpointing": checkpoint_every > 0,
        "enable_progress_bar": progress_bar,
        "enable_model_summary": False,
        "log_every_n_steps": log_every_n_steps,
        "num_sanity_val_steps": 0,
        "deterministic": False,
        # every step has the same shapes: let cuDNN time its convolution algorithms once
        "benchmark": True,
    }
    return L.Trainer(**{**arguments, **options})
