"""Image sources of the dataset pass, and its unit of work: a shard of consecutive images.

A source is an image folder (ImageFolder layout or any tree of image files, read in sorted
order) or a torchvision data set. Images come out as ``(3, H, W)`` in [0, 1] at the model's
input size; one that fails to decode comes out as None (the pass skips and counts it).
A shard covers the global index range ``[start, end)`` and is named by it, so shards written
by different processes never collide and a resumed pass finds exactly the missing ones.
"""

from __future__ import annotations

import hashlib
import inspect
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch
from PIL import Image
from torch.utils.data import Dataset

from mti_lightning.core.errors import MTIConfigError

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".ppm", ".pgm", ".tif", ".tiff", ".webp")


class ImageSource(Protocol):
    """Indexable images of one size ``(H, W)``, with names and labels."""

    size: tuple[int, int]

    def __len__(self) -> int: ...

    def load(self, index: int) -> torch.Tensor | None: ...

    def name(self, index: int) -> str: ...

    def label(self, index: int) -> str: ...

    def identity(self) -> str: ...


def _to_tensor(img: Image.Image, size: tuple[int, int]) -> torch.Tensor:
    img = img.convert("RGB")
    if img.size != (size[1], size[0]):
        img = img.resize((size[1], size[0]), Image.BICUBIC)
    arr = np.asarray(img, dtype=np.float32) / 255.0
    return torch.from_numpy(arr).permute(2, 0, 1).contiguous()


class FolderSource:
    """Every image file under ``root`` (recursively, sorted by relative path)."""

    def __init__(self, root: str | Path, size: tuple[int, int]):
        self.root = Path(root)
        self.size = size
        if not self.root.is_dir():
            raise MTIConfigError(
                f"image folder {self.root} does not exist or is not a directory; give a folder "
                "of images, data=curves, or data=torchvision:NAME"
            )
        self.files = sorted(
            p.relative_to(self.root).as_posix()
            for p in self.root.rglob("*")
            if p.suffix.lower() in IMAGE_EXTENSIONS and p.is_file()
        )
        if not self.files:
            raise MTIConfigError(
                f"image folder {self.root} holds no image files (looked for "
                f"{', '.join(IMAGE_EXTENSIONS)} in it and its subfolders)"
            )

    def __len__(self) -> int:
        return len(self.files)

    def load(self, index: int) -> torch.Tensor | None:
        """The image, or None when the file does not decode."""
        try:
            with Image.open(self.root / self.files[index]) as img:
                return _to_tensor(img, self.size)
        except Exception:  # PIL raises OSError, SyntaxError, ValueError... on broken files
            return None

    def name(self, index: int) -> str:
        return self.files[index]

    def label(self, index: int) -> str:
        parent = Path(self.files[index]).parent.as_posix()
        return "" if parent == "." else parent

    def identity(self) -> str:
        """Changes when the set of files changes (their names, not their content)."""
        digest = hashlib.sha256("\n".join(self.files).encode()).hexdigest()[:16]
        return f"folder:{self.root.resolve()}:{len(self.files)}:{digest}"


class DatasetSource:
    """Any indexable data set whose items are an image or ``(image, label)``; images are PIL
    images or ``(3, H, W)`` tensors in [0, 1] (the Python API's ``data=`` a torch Dataset)."""

    def __init__(self, dataset: Any, name: str, size: tuple[int, int], kind: str = "dataset"):
        self.dataset, self.dataset_name, self.size, self.kind = dataset, name, size, kind
        try:
            n = len(dataset)
        except TypeError as err:
            raise MTIConfigError(
                f"data set {name} has no length; give an indexable (map-style) data set"
            ) from err
        if n == 0:
            raise MTIConfigError(f"data set {name} is empty")
        self.classes = list(getattr(dataset, "classes", []) or [])

    def __len__(self) -> int:
        return len(self.dataset)

    def _item(self, index: int) -> tuple[Any, Any]:
        item = self.dataset[index]
        return (item[0], item[1]) if isinstance(item, (tuple, list)) else (item, "")

    def load(self, index: int) -> torch.Tensor | None:
        try:
            img = self._item(index)[0]
            if isinstance(img, torch.Tensor):
                pixels = img.detach().float().clamp(0, 1).mul(255).round().byte()
                img = Image.fromarray(pixels.permute(1, 2, 0).cpu().numpy())
            return _to_tensor(img, self.size)
        except Exception:  # a broken item is skipped and counted, as for files
            return None

    def name(self, index: int) -> str:
        return f"{self.dataset_name}[{index}]"

    def label(self, index: int) -> str:
        target = self._item(index)[1]
        if isinstance(target, int) and 0 <= target < len(self.classes):
            return str(self.classes[target])
        return str(target)

    def identity(self) -> str:
        return f"{self.kind}:{self.dataset_name}:{len(self.dataset)}"


def torchvision_source(name: str, root: str, size: tuple[int, int]) -> DatasetSource:
    """A torchvision data set by class name (``CIFAR10``, ``FakeData``, ...), never
    downloaded, read from ``root``."""
    import torchvision.datasets as tvd

    cls = getattr(tvd, name, None)
    if not isinstance(cls, type):
        valid = sorted(n for n in tvd.__all__ if n[0].isupper())
        raise MTIConfigError(f"unknown torchvision data set {name!r}; valid: {', '.join(valid)}")
    params = inspect.signature(cls).parameters
    kwargs: dict[str, Any] = {}
    if "root" in params:
        kwargs["root"] = root or "."
    if "download" in params:
        kwargs["download"] = False
    try:
        dataset = cls(**kwargs)
    except Exception as err:  # each data set raises its own kind when files are missing
        raise MTIConfigError(
            f"could not open torchvision data set {name} at root {root!r} "
            f"({type(err).__name__}: {err}); put its files under data_root"
        ) from err
    if len(dataset) == 0:
        raise MTIConfigError(f"torchvision data set {name} at root {root!r} is empty")
    return DatasetSource(dataset, name, size, kind="torchvision")


def resolve_source(data: str, folder: Path | None, size: tuple[int, int]) -> ImageSource:
    """The source named by ``data`` (``folder`` is where ``curves`` were written)."""
    if data.startswith("torchvision:"):
        return torchvision_source(data.split(":", 1)[1], str(folder or ""), size)
    return FolderSource(folder if data == "curves" and folder else Path(data), size)


def shard_name(start: int, end: int) -> str:
    """File name of the shard of images ``[start, end)``."""
    return f"shard_{start:09d}_{end:09d}.safetensors"


def shard_ranges(n: int, shard_size: int) -> list[tuple[int, int]]:
    """Consecutive ``[start, end)`` ranges of at most ``shard_size`` covering ``n`` images."""
    return [(s, min(s + shard_size, n)) for s in range(0, n, shard_size)]


class ShardDataset(Dataset):
    """Item ``s`` is shard ``s``: its decoded images, or a skip marker when its file exists.

    The item list is the same on every process (all shards), so a distributed sampler gives
    each shard to exactly one process however many shards a previous run left.
    """

    def __init__(self, source: ImageSource, shard_size: int, shard_dir: Path):
        self.source, self.shard_dir = source, shard_dir
        self.ranges = shard_ranges(len(source), shard_size)

    def __len__(self) -> int:
        return len(self.ranges)

    def __getitem__(self, s: int) -> dict[str, Any]:
        start, end = self.ranges[s]
        item: dict[str, Any] = {"start": start, "end": end}
        if (self.shard_dir / shard_name(start, end)).exists():
            return {**item, "skip": True}
        images, ok, failed = [], [], []
        for i in range(start, end):
            img = self.source.load(i)
            (failed if img is None else ok).append(i)
            if img is not None:
                images.append(img)
        stacked = torch.stack(images) if images else torch.zeros(0, 3, *self.source.size)
        return {
            **item,
            "skip": False,
            "images": stacked,
            "index": torch.tensor(ok, dtype=torch.int64),
            "failed": torch.tensor(failed, dtype=torch.int64),
        }
