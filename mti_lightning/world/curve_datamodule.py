"""Lightning data module of curve images: train and validation streams with disjoint seeds."""

from __future__ import annotations

from typing import Any

import lightning as L
from torch.utils.data import DataLoader, Dataset

from mti_lightning.world.curve_dataset import CurveDataset, RenderedCurveDataset
from mti_lightning.world.curves import CurveConfig


class CurveDataModule(L.LightningDataModule):
    """Train/val :class:`CurveDataset` pair; ``in_memory`` renders each once at setup.

    Validation images are always single-arc, so validation accuracy measures the orientation
    task itself; ``two_arc_fraction`` applies to training only.
    """

    def __init__(
        self,
        train_size: int = 32768,
        val_size: int = 2048,
        train_seed: int = 0,
        val_seed: int = 1,
        config: CurveConfig | dict[str, Any] | None = None,
        two_arc_fraction: float = 0.0,
        batch_size: int = 128,
        num_workers: int = 0,
        in_memory: bool = True,
    ) -> None:
        super().__init__()
        if train_seed == val_seed:
            raise ValueError(f"train_seed and val_seed must differ, both are {train_seed}")
        if batch_size <= 0:
            raise ValueError(f"batch_size must be positive, got {batch_size}")
        if num_workers < 0:
            raise ValueError(f"num_workers must be >= 0, got {num_workers}")
        if isinstance(config, dict):
            config = CurveConfig.from_dict(config)
        self.config = config or CurveConfig()
        self.batch_size = batch_size
        self.num_workers = num_workers
        self.in_memory = in_memory
        # Built here, not in setup, so bad sizes or fractions fail before any work starts.
        self.train_source = CurveDataset(train_size, train_seed, self.config, two_arc_fraction)
        self.val_source = CurveDataset(val_size, val_seed, self.config, 0.0)
        self.train_set: Dataset | None = None
        self.val_set: Dataset | None = None

    def _prepare(self, source: CurveDataset) -> Dataset:
        return RenderedCurveDataset(source, self.num_workers) if self.in_memory else source

    def setup(self, stage: str) -> None:
        """Render (or wrap) the datasets the stage needs; repeated calls reuse them."""
        if stage == "fit" and self.train_set is None:
            self.train_set = self._prepare(self.train_source)
        if stage in ("fit", "validate") and self.val_set is None:
            self.val_set = self._prepare(self.val_source)

    def _loader(self, dataset: Dataset, shuffle: bool) -> DataLoader:
        # Rendered data is indexed in the main process; rendering on the fly uses the workers.
        workers = 0 if self.in_memory else self.num_workers
        return DataLoader(
            dataset,
            batch_size=self.batch_size,
            shuffle=shuffle,
            num_workers=workers,
            persistent_workers=workers > 0,
        )

    def train_dataloader(self) -> DataLoader:
        """Shuffled training batches of ``(images in [0, 1], labels)``."""
        return self._loader(self.train_set, shuffle=True)

    def val_dataloader(self) -> DataLoader:
        """Validation batches, in index order."""
        return self._loader(self.val_set, shuffle=False)
