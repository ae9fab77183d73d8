"""Curve images as a PyTorch dataset and as an on-disk ``ImageFolder`` export.

The dataset renders each item on demand from ``(seed, index)``, so it costs no memory and any
worker can render any index. The export writes the same images as PNGs for tools that read
image folders (the atlas pipeline, other frameworks), resumably: each file is written under a
temporary name and renamed, and files already present are kept.
"""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch.utils.data import DataLoader, Dataset

from mti_lightning.core.io import atomic_write
from mti_lightning.world.curves import (
    NUM_CLASSES,
    CurveConfig,
    CurveSample,
    class_name,
    generate,
    labels_of,
)


def _check_args(n: int, seed: int, two_arc_fraction: float) -> None:
    if n <= 0:
        raise ValueError(f"n (number of images) must be a positive integer, got {n}")
    if seed < 0:
        raise ValueError(f"seed must be >= 0, got {seed}")
    if not 0.0 <= two_arc_fraction <= 1.0:
        raise ValueError(f"two_arc_fraction must be in [0, 1], got {two_arc_fraction}")


class CurveDataset(Dataset):
    """``n`` curve images of stream ``seed``; item ``i`` is ``(image 3xHxW in [0,1], label)``."""

    def __init__(
        self,
        n: int,
        seed: int,
        config: CurveConfig | None = None,
        two_arc_fraction: float = 0.0,
    ) -> None:
        _check_args(n, seed, two_arc_fraction)
        self.n = n
        self.seed = seed
        self.config = config or CurveConfig()
        self.two_arc_fraction = two_arc_fraction

    def __len__(self) -> int:
        return self.n

    def sample(self, index: int) -> CurveSample:
        """The full rendered sample (image, both labels, arc parameters) at ``index``."""
        if not 0 <= index < self.n:
            raise IndexError(f"index {index} out of range for CurveDataset of length {self.n}")
        return generate(self.seed, index, self.config, self.two_arc_fraction)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        s = self.sample(index)
        return torch.from_numpy(s.image), s.label


class RenderedCurveDataset(Dataset):
    """A :class:`CurveDataset` rendered once into memory (8-bit, like the PNG export).

    Rendering costs about a millisecond per image and a small CNN trains on several thousand
    images a second, so multi-epoch training renders once (in ``num_workers`` processes) rather
    than every epoch. Items are ``(float image in [0, 1], label)`` as in the source dataset.
    """

    def __init__(self, source: CurveDataset, num_workers: int = 0, batch_size: int = 256) -> None:
        loader = DataLoader(source, batch_size=batch_size, num_workers=num_workers)
        images, labels = [], []
        for x, y in loader:
            images.append(torch.round(x * 255).to(torch.uint8))
            labels.append(y)
        self.images = torch.cat(images)
        self.labels = torch.cat(labels)

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        return self.images[index].float().div_(255), int(self.labels[index])


def write_image_folder(
    out_dir: str | Path,
    n: int,
    seed: int,
    config: CurveConfig | None = None,
    two_arc_fraction: float = 0.0,
) -> Path:
    """Export ``n`` images as ``out_dir/ori_XXX/<index:06d>.png`` plus ``labels.csv``.

    Two-arc images go in the class folder of their first arc; ``labels.csv`` has the columns
    ``file`` (relative to ``out_dir``), ``orientation`` and ``second_orientation`` (class
    indices; the latter empty for single-arc images). PNG stores 8 bits, so pixels differ from
    the in-memory samples by at most 1/255. Re-running with the same arguments renders only the
    files that are missing. Returns ``out_dir``.
    """
    _check_args(n, seed, two_arc_fraction)
    config = config or CurveConfig()
    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise ValueError(f"out_dir {out} exists and is not a directory")
    for label in range(NUM_CLASSES):
        (out / class_name(label)).mkdir(parents=True, exist_ok=True)

    rows = []
    for index in range(n):
        label, second_label = labels_of(seed, index, two_arc_fraction)
        rel = f"{class_name(label)}/{index:06d}.png"
        rows.append((rel, label, "" if second_label is None else second_label))
        path = out / rel
        if path.exists():
            continue
        image = generate(seed, index, config, two_arc_fraction).image
        pixels = np.rint(image.transpose(1, 2, 0) * 255).astype(np.uint8)
        atomic_write(path, lambda tmp, p=pixels: Image.fromarray(p).save(tmp, format="PNG"))

    def write_csv(tmp: Path) -> None:
        with open(tmp, "w", newline="") as f:
            writer = csv.writer(f)
            writer.writerow(("file", "orientation", "second_orientation"))
            writer.writerows(rows)

    atomic_write(out / "labels.csv", write_csv)
    return out
