"""The Trainer side of ``core.heap``: freed memory stays in the heap while a CPU run lasts."""

from __future__ import annotations

from contextlib import ExitStack

import lightning as L

from mti_lightning.core.heap import keep_freed_memory


class KeepFreedMemory(L.Callback):
    """From the start to the end of a fit or predict on a CPU, large freed blocks are kept for
    the next step instead of unmapped and faulted in again (``core.heap``); restored after,
    also when the run fails. Does nothing on a GPU, whose tensors glibc never sees."""

    def __init__(self) -> None:
        self._held: ExitStack | None = None

    def _hold(self, trainer: L.Trainer) -> None:
        self._release()
        self._held = ExitStack()
        self._held.enter_context(keep_freed_memory(trainer.strategy.root_device.type == "cpu"))

    def _release(self) -> None:
        if self._held is not None:
            self._held.close()
            self._held = None

    def on_fit_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._hold(trainer)

    def on_fit_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._release()

    def on_predict_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._hold(trainer)

    def on_predict_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._release()

    def on_exception(
        self, trainer: L.Trainer, pl_module: L.LightningModule, exception: BaseException
    ) -> None:
        self._release()
