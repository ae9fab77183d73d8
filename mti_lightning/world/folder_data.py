"""Training data from any ImageFolder (``ROOT/CLASS/*.png``): a seeded train/val/test split.

Images are read and resized once into memory (8-bit), like the rendered curve images, so an
epoch costs no decoding. Files are the image source's (``core.io``'s suffixes and decoder);
those that do not decode are skipped and listed in ``failed`` (the training reports them as
every data pass does).
"""

from __future__ import annotations

from pathlib import Path

import lightning as L
import torch
from torch.utils.data import DataLoader, Dataset

from mti_lightning.core.errors import MTIConfigError
from mti_lightning.core.io import is_image_file, read_image


class _Uint8Images(Dataset):
    def __init__(self, images: torch.Tensor, labels: torch.Tensor) -> None:
        self.images, self.labels = images, labels

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        return self.images[index].float().div_(255), int(self.labels[index])


def scan_folder(root: str | Path) -> tuple[list[Path], list[int], list[str]]:
    """Image files, their class indices and the class names (sorted sub-folders)."""
    root = Path(root).expanduser()
    if not root.is_dir():
        raise MTIConfigError(
            f"train.data={root} is not a directory; valid: curves or an ImageFolder ROOT/CLASS/*"
        )
    classes = sorted(p.name for p in root.iterdir() if p.is_dir())
    files, labels = [], []
    for k, name in enumerate(classes):
        for path in sorted((root / name).rglob("*")):
            if is_image_file(path):
                files.append(path)
                labels.append(k)
    if len(classes) < 2 or not files:
        raise MTIConfigError(
            f"train.data={root} holds {len(files)} images in {len(classes)} class folders; "
            "an ImageFolder needs at least two class folders with images"
        )
    return files, labels, classes


class FolderDataModule(L.LightningDataModule):
    """Seeded split of an ImageFolder: ``test_size`` and ``val_size`` held out, the rest (at most
    ``train_size``) for training; ``test_set`` is built with the others for the final check."""

    def __init__(
        self,
        root: str | Path,
        size: int,
        train_size: int,
        val_size: int,
        test_size: int,
        seed: int,
        batch_size: int,
    ) -> None:
        super().__init__()
        self.files, self.labels, self.classes = scan_folder(root)
        if val_size + test_size >= len(self.files):
            raise MTIConfigError(
                f"train.data={root} has {len(self.files)} images; val_size {val_size} + "
                f"test_size {test_size} leave none for training"
            )
        self.root = Path(root).expanduser()
        self.size, self.batch_size = size, batch_size
        self.failed: list[str] = []
        order = torch.randperm(len(self.files), generator=torch.Generator().manual_seed(seed))
        self.split = {
            "test": order[:test_size].tolist(),
            "val": order[test_size : test_size + val_size].tolist(),
            "train": order[test_size + val_size :][:train_size].tolist(),
        }
        self.sets: dict[str, Dataset] = {}

    def _load(self, part: str) -> Dataset:
        if part not in self.sets:
            images, labels = [], []
            for i in self.split[part]:
                image = read_image(self.files[i], (self.size, self.size))
                if image is None:
                    self.failed.append(self.files[i].relative_to(self.root).as_posix())
                    continue
                images.append(torch.round(image * 255).to(torch.uint8))
                labels.append(self.labels[i])
            if not images:
                raise MTIConfigError(f"no image of the {part} split decodes")
            self.sets[part] = _Uint8Images(torch.stack(images), torch.tensor(labels))
        return self.sets[part]

    @property
    def num_classes(self) -> int:
        """Number of class folders."""
        return len(self.classes)

    def setup(self, stage: str) -> None:
        """Read the splits the stage needs into memory."""
        self._load("train")
        self._load("val")

    def train_dataloader(self) -> DataLoader:
        """Shuffled training batches of ``(images in [0, 1], labels)``."""
        return DataLoader(self._load("train"), batch_size=self.batch_size, shuffle=True)

    def val_dataloader(self) -> DataLoader:
        """Validation batches, in split order."""
        return DataLoader(self._load("val"), batch_size=self.batch_size)

    def test_set(self) -> Dataset:
        """The held-out test split."""
        return self._load("test")
