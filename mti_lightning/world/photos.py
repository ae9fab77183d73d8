"""Natural images offline: seeded random crops of the photographs scikit-image ships.

``skimage.data`` holds a few photographs inside the wheel (no download): a cat, a cup of
coffee, an astronaut, a rocket, textures (brick, grass, gravel), coins, the moon, a page of
text, ... :class:`PhotoCrops` cuts ``n`` square crops from them (each photograph in turn, a
seeded position and side: a fixed side in source pixels or a seeded fraction of the
photograph's shorter side) and resizes them to ``size``; greyscale photographs are repeated into
three channels. The same arguments give the same crops on any machine.

Wherever data is taken it is named ``photos`` or ``photos:KEY=VALUE,...`` with the keys
``n``, ``crop`` (pixels), ``scale`` (``LOW-HIGH``), ``seed`` and ``photos`` (names joined by
``+``), e.g. ``data=photos:n=512,scale=0.2-0.6``; :func:`photo_crops` reads that string, and
:func:`write_photo_folder` writes the crops as an ImageFolder (one class per photograph).
"""

from __future__ import annotations

import hashlib
import os
import shutil
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch.utils.data import Dataset

from mti_lightning.core.errors import MTIConfigError

INSTALL_HINT = "pip install 'mti-lightning[imagenet]'"
PREFIX = "photos"
# photographs in skimage.data that ship inside the wheel (no pooch download); the binary,
# synthetic and microscopy-stack images are left out
PHOTOS: tuple[str, ...] = (
    "astronaut",
    "brick",
    "camera",
    "cell",
    "chelsea",
    "clock",
    "coffee",
    "coins",
    "grass",
    "gravel",
    "hubble_deep_field",
    "immunohistochemistry",
    "moon",
    "page",
    "retina",
    "rocket",
    "text",
)
DEFAULTS: dict[str, Any] = {"n": 256, "crop": None, "scale": (0.15, 0.6), "seed": 0}


def load_photo(name: str) -> np.ndarray:
    """Photograph ``name`` of ``skimage.data`` as ``H x W x 3`` uint8 (greyscale repeated)."""
    try:
        from skimage import data
    except ImportError:
        raise MTIConfigError(f"data=photos needs scikit-image: {INSTALL_HINT}") from None
    if name not in PHOTOS:
        raise MTIConfigError(f"unknown photograph {name!r}; valid: {', '.join(PHOTOS)}")
    img = np.asarray(getattr(data, name)())
    if img.ndim == 2:
        img = np.repeat(img[:, :, None], 3, axis=2)
    img = img[:, :, :3]
    if img.dtype != np.uint8:  # e.g. float images in [0, 1]
        img = (np.clip(img.astype(np.float64), 0, 1) * 255).round().astype(np.uint8)
    return np.ascontiguousarray(img)


class PhotoCrops(Dataset):
    """``n`` seeded square crops of scikit-image's photographs, ``(3, size, size)`` in [0, 1].

    ``crop``: the side in source pixels (every crop); else each crop's side is a uniform draw
    of ``scale`` (low, high) times its photograph's shorter side. Items are ``(image, label)``,
    the label the photograph's index in ``classes``. Bad arguments fail here, before any work.
    """

    def __init__(
        self,
        n: int = DEFAULTS["n"],
        crop: int | None = None,
        scale: Sequence[float] = DEFAULTS["scale"],
        size: int = 224,
        seed: int = 0,
        photos: Sequence[str] | None = None,
    ) -> None:
        self.classes = list(photos or PHOTOS)
        if int(n) < 1:
            raise MTIConfigError(f"photos: n={n} crops; need at least 1")
        if int(size) < 1:
            raise MTIConfigError(f"photos: size={size}; need at least 1 pixel")
        low, high = (float(v) for v in scale)
        if crop is None and not 0 < low <= high <= 1:
            raise MTIConfigError(f"photos: scale={low}-{high}; need 0 < low <= high <= 1")
        self.images = [load_photo(name) for name in self.classes]
        if crop is not None:
            if int(crop) < 1:
                raise MTIConfigError(f"photos: crop={crop} pixels; need at least 1")
            for name, img in zip(self.classes, self.images):
                if int(crop) > min(img.shape[:2]):
                    raise MTIConfigError(
                        f"photos: crop={crop} px is larger than photograph {name!r} "
                        f"({img.shape[0]}x{img.shape[1]}); valid: crop <= "
                        f"{min(min(i.shape[:2]) for i in self.images)} for these photographs"
                    )
        self.n, self.size, self.seed = int(n), int(size), int(seed)
        self.crop, self.scale = crop, (low, high)
        gen = torch.Generator().manual_seed(self.seed)
        self.boxes: list[tuple[int, int, int, int]] = []
        for i in range(self.n):
            label = i % len(self.classes)
            h, w = self.images[label].shape[:2]
            u = torch.rand(3, generator=gen, dtype=torch.float64).tolist()
            side = int(crop) if crop is not None else round((low + (high - low) * u[0]) * min(h, w))
            side = max(1, side)
            top, left = int(u[1] * (h - side + 1)), int(u[2] * (w - side + 1))
            self.boxes.append((label, top, left, side))

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        label, top, left, side = self.boxes[index]
        patch = self.images[label][top : top + side, left : left + side]
        x = torch.from_numpy(np.ascontiguousarray(patch)).permute(2, 0, 1).float()[None] / 255
        if side != self.size:
            x = F.interpolate(x, size=(self.size, self.size), mode="bilinear", antialias=True)
        return x[0].clamp(0, 1), label

    def name(self, index: int) -> str:
        """``photo/crop_INDEX`` (the crop's photograph and its index)."""
        return f"{self.classes[self.boxes[index][0]]}/crop_{index:05d}"

    def identity(self) -> str:
        """Changes with every argument that changes the crops."""
        return (
            f"photos:n={self.n},crop={self.crop},scale={self.scale[0]}-{self.scale[1]},"
            f"size={self.size},seed={self.seed},photos={'+'.join(self.classes)}"
        )


def is_photos(data: Any) -> bool:
    """Whether ``data`` names the photographs (``photos`` or ``photos:KEY=VALUE,...``)."""
    return isinstance(data, str) and (data == PREFIX or data.startswith(PREFIX + ":"))


def parse_spec(spec: str) -> dict[str, Any]:
    """The keyword arguments of ``photos:n=512,crop=96,scale=0.2-0.6,seed=0,photos=a+b``."""
    if not is_photos(spec):
        raise MTIConfigError(f"{spec!r} does not name the photographs; valid: photos[:KEY=VALUE]")
    kwargs: dict[str, Any] = {}
    body = spec[len(PREFIX) + 1 :] if spec != PREFIX else ""
    for item in filter(None, body.split(",")):
        key, sep, value = item.partition("=")
        try:
            if not sep:
                raise ValueError
            if key in ("n", "crop", "seed"):
                kwargs[key] = int(value)
            elif key == "scale":
                low, high = value.split("-")
                kwargs[key] = (float(low), float(high))
            elif key == "photos":
                kwargs[key] = value.split("+")
            else:
                raise KeyError(key)
        except (ValueError, KeyError):
            raise MTIConfigError(
                f"data={spec!r}: bad item {item!r}; valid: n=INT, crop=PIXELS, "
                "scale=LOW-HIGH, seed=INT, photos=NAME+NAME"
            ) from None
    return kwargs


def photo_crops(spec: str = PREFIX, size: int = 224, **overrides: Any) -> PhotoCrops:
    """The crops ``spec`` names, at ``size`` pixels (``overrides``: defaults the spec wins over)."""
    return PhotoCrops(size=size, **{**overrides, **parse_spec(spec)})


def write_photo_folder(spec: str, out_dir: str | Path, size: int = 224, **overrides: Any) -> Path:
    """The crops as PNGs in an ImageFolder ``out_dir/<photograph>/crop_INDEX.png``.

    Written into a temporary folder and renamed, so a folder there is complete; one made with
    other arguments (its ``identity.txt`` differs) is an error rather than silently reused.
    """
    crops = photo_crops(spec, size, **overrides)
    out = Path(out_dir)
    identity = crops.identity()
    stamp = out / "identity.txt"
    if stamp.is_file():
        if stamp.read_text() == identity:
            return out
        raise MTIConfigError(f"{out} holds other photo crops ({stamp.read_text()}); remove it")
    if out.exists() and any(out.iterdir()):
        raise MTIConfigError(f"{out} exists and holds other files; give an empty or new folder")
    tmp = out.with_name(f".{out.name}.tmp{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    for i in range(len(crops)):
        path = tmp / f"{crops.name(i)}.png"
        path.parent.mkdir(parents=True, exist_ok=True)
        pixels = crops[i][0].mul(255).round().byte().permute(1, 2, 0).numpy()
        Image.fromarray(pixels).save(path)
    (tmp / "identity.txt").write_text(identity)
    out.parent.mkdir(parents=True, exist_ok=True)
    if out.exists():
        out.rmdir()
    os.replace(tmp, out)
    return out


def photo_cache_folder(spec: str, size: int) -> Path:
    """Where the ImageFolder of ``spec`` at ``size`` is cached (training reads it from there)."""
    key = hashlib.sha256(f"{spec}@{size}".encode()).hexdigest()[:16]
    root = Path(os.environ.get("MTI_PHOTOS_CACHE", Path.home() / ".cache" / "mti-lightning"))
    return root / "photos" / key
