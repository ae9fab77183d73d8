"""The one image source of every journey that reads data: an image folder, a torch ``Dataset``,
``torchvision:NAME`` or a built-in named source (``curves``, registered by the world).

A source is indexable: item ``i`` comes out as ``(3, H, W)`` in [0, 1] at the model's input
size, decoded by ``core.io``'s one decoder from files with ``core.io``'s one suffix list; an
item that does not decode comes out as None, and the journey skips it, counts it on the console
and lists it in a ``failed.json`` (:func:`report_undecodable`), the same way everywhere.
"""

from __future__ import annotations

import hashlib
import inspect
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Protocol

import torch
from PIL import Image

from mti_lightning.core.errors import MTIConfigError
from mti_lightning.core.io import (
    IMAGE_SUFFIXES,
    decode_image,
    is_image_file,
    read_image,
    write_json,
)


class ImageSource(Protocol):
    """Indexable images of one size ``(H, W)``, with names and labels."""

    size: tuple[int, int]

    def __len__(self) -> int: ...

    def load(self, index: int) -> torch.Tensor | None: ...

    def name(self, index: int) -> str: ...

    def label(self, index: int) -> str: ...

    def identity(self) -> str: ...


class FolderSource:
    """Every image file under ``root`` (recursively, sorted by relative path; the first
    ``limit`` of them when given)."""

    def __init__(self, root: str | Path, size: tuple[int, int], limit: int | None = None):
        self.root = Path(root)
        self.size = size
        if not self.root.is_dir():
            raise MTIConfigError(
                f"image folder {self.root} does not exist or is not a directory; give a folder "
                f"of images, {', '.join(SOURCES)} or torchvision:NAME"
            )
        files = sorted(p.relative_to(self.root).as_posix() for p in self.root.rglob("*"))
        self.files = [f for f in files if is_image_file(self.root / f)][:limit]
        if not self.files:
            raise MTIConfigError(
                f"image folder {self.root} holds no image files (looked for "
                f"{', '.join(IMAGE_SUFFIXES)} in it and its subfolders)"
            )

    def __len__(self) -> int:
        return len(self.files)

    def load(self, index: int) -> torch.Tensor | None:
        """The image, or None when the file does not decode."""
        return read_image(self.root / self.files[index], self.size)

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
            return decode_image(img, self.size)
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


@dataclass(frozen=True)
class SourceRequest:
    """What a journey asks of a named source: images of ``size`` ``(H, W)``, ``n`` of them
    (0: the source's own count) drawn with ``seed``; ``folder`` is where a source that renders
    files writes them; ``options`` are the source's own keys (e.g. ``two_arc_fraction``)."""

    size: tuple[int, int]
    folder: Path
    n: int = 0
    seed: int = 0
    options: Mapping[str, Any] = field(default_factory=dict)


SourceFactory = Callable[[SourceRequest], ImageSource]
SOURCES: dict[str, SourceFactory] = {}


def register_source(name: str, factory: SourceFactory) -> None:
    """Make ``name`` a built-in data set (``atlas.data=NAME``, the comparison, training)."""
    SOURCES[name] = factory


def source_name(data: Any) -> str | None:
    """The registered source that ``data`` names (``NAME`` or ``NAME:KEY=VALUE,...``; the
    whole string reaches the source as ``options["spec"]``), or None."""
    if not isinstance(data, str):
        return None
    name = data.split(":", 1)[0]
    return name if name in SOURCES else None


def open_source(
    data: Any,
    size: tuple[int, int],
    root: str | Path | None = None,
    request: SourceRequest | None = None,
    limit: int | None = None,
) -> ImageSource:
    """The source ``data`` names: a data set object, a registered name (built with
    ``request``), ``torchvision:NAME`` (files under ``root``) or an image folder (its first
    ``limit`` images)."""
    if not isinstance(data, (str, Path)):
        return DatasetSource(data, type(data).__name__, size)
    data = str(data)
    name = source_name(data)
    if name is not None:
        base = request or SourceRequest(size, Path(root or name))
        return SOURCES[name](replace(base, options={**base.options, "spec": data}))
    if data.startswith("torchvision:"):
        return torchvision_source(data.split(":", 1)[1], str(root or ""), size)
    return FolderSource(Path(data), size, limit)


def report_undecodable(who: str, names: Sequence[str], n_files: int, listing: Path) -> None:
    """List the items that did not decode in ``listing`` (JSON, written even when empty, so a
    reader finds it) and say how many on the console."""
    write_json(listing, list(names))
    if names:
        print(
            f"{who}: skipped {len(names)} of {n_files} images that did not decode; "
            f"listed in {listing}"
        )
