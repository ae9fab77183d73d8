"""Callbacks of a search: snapshots, transparency maps, early stop, a non-finite guard, and the
base of callbacks that act once the whole search (its inversions included) is done."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import lightning as L
import torch
from lightning.pytorch.loggers import WandbLogger
from torchvision.utils import make_grid

from mti_lightning.core.io import save_png
from mti_lightning.shells.search import MTISearch


def _wandb(trainer: L.Trainer) -> WandbLogger | None:
    return next((lg for lg in trainer.loggers if isinstance(lg, WandbLogger)), None)


class ImageSnapshots(L.Callback):
    """Save the image batch as a PNG grid (and a W&B image) after the given steps."""

    def __init__(self, out_dir: str | Path, steps: Sequence[int], every: int):
        self.out_dir, self.steps, self.every = Path(out_dir), set(steps), every

    def _due(self, step: int) -> bool:
        return step in self.steps or (self.every > 0 and step % self.every == 0)

    def _snapshot(self, trainer: L.Trainer, module: MTISearch, step: int) -> None:
        if not trainer.is_global_zero:
            return
        with torch.no_grad():
            images = module().float().cpu()
        grid = make_grid(images, nrow=min(8, len(images)), padding=2, pad_value=1.0)
        save_png(self.out_dir / f"step_{step:06d}.png", grid)
        logger = _wandb(trainer)
        if logger is not None:
            logger.log_image("snapshots", [grid], step=step, caption=[f"step {step}"])

    def on_train_start(self, trainer: L.Trainer, module: MTISearch) -> None:
        if self._due(trainer.global_step):
            self._snapshot(trainer, module, trainer.global_step)

    def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx) -> None:
        if self._due(trainer.global_step):
            self._snapshot(trainer, module, trainer.global_step)


class TransparencyMaps(L.Callback):
    """Accumulate ``|d loss / d pixel|`` over the search and keep it as each image's alpha:
    pixels the objective never cared about become transparent."""

    def __init__(self, percentile: float = 0.99):
        self.percentile = percentile
        self.alpha: torch.Tensor | None = None

    def on_fit_start(self, trainer: L.Trainer, module: MTISearch) -> None:
        module.track_pixel_grads = True

    def on_train_end(self, trainer: L.Trainer, module: MTISearch) -> None:
        g = module.pixel_grads.detach().float()
        top = torch.quantile(g.flatten(1), self.percentile, dim=1).clamp_min(1e-12)
        self.alpha = (g / top.view(-1, 1, 1)).clamp(0, 1).cpu()


class StopAtTarget(L.Callback):
    """Stop once every image's feature reaches ``activation`` (checked every ``every`` steps,
    so the host waits on the device only then)."""

    def __init__(self, activation: float | None = None, every: int = 10):
        self.activation, self.every = activation, max(1, every)
        self.stopped_at: int | None = None

    def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx) -> None:
        if self.activation is None or module.last_values is None:
            return
        if trainer.global_step % self.every == 0:
            reached = bool((module.last_values >= self.activation).all())
            reached = trainer.strategy.reduce_boolean_decision(reached, all=True)
            if reached:
                self.stopped_at = trainer.global_step
                trainer.should_stop = True


class NonFiniteGuard(L.Callback):
    """Stop when the objective or images become NaN/Inf, restore the last finite images and
    say at which step (checked every ``every`` steps and at the end)."""

    def __init__(self, every: int = 10):
        self.every = max(1, every)
        self.bad_step: int | None = None

    def _check(self, trainer: L.Trainer, module: MTISearch) -> None:
        if self.bad_step is not None:
            return
        step = int(module.first_bad_step)
        if step >= 0:
            self.bad_step = step
            module.restore_last_finite()
            trainer.should_stop = True
            if trainer.is_global_zero:
                print(
                    f"mti: the objective became non-finite at step {step}; stopped and kept the "
                    "images of the last finite step"
                )

    def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx) -> None:
        if trainer.global_step % self.every == 0:
            self._check(trainer, module)

    def on_train_end(self, trainer: L.Trainer, module: MTISearch) -> None:
        self._check(trainer, module)


class SearchEndCallback(L.Callback):
    """A callback that also hears of the end of the whole search: after the engine's last
    stage (the +/- inversions of the final images, when the search makes them), on every
    process. ``columns`` gives per-image columns for the search's results rows."""

    def on_search_end(
        self,
        trainer: L.Trainer,
        module: MTISearch,
        inversions: dict[str, torch.Tensor] | None,
    ) -> None:
        """Called once the search and its inversions (None: none) are done."""

    def columns(self) -> list[dict[str, Any]]:
        """Per image, the columns this callback adds to the results rows (none by default)."""
        return []
