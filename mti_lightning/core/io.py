"""Files of a run: atomic writes (temp name, then rename) and image loading with clear errors."""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError

from mti_lightning.core.errors import NO_SPACE, DiskFullError, MTIConfigError


def atomic_write(
    path: str | Path, write: Callable[[Path], None], needed: int | None = None
) -> Path:
    """Call ``write(tmp)`` on a temporary file beside ``path``, then rename it into place, so
    ``path`` is either absent or whole (its earlier version stays where the write fails).

    A write that fails for lack of space is a :class:`DiskFullError` naming ``path``, the
    space it needs (``needed`` bytes, where the caller knows it) and what is free there."""
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    except OSError as err:
        full = disk_full(err, path, needed)
        if full is None:
            raise
        raise full from err
    os.close(fd)
    try:
        write(Path(tmp))
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except OSError as err:
        written = os.path.getsize(tmp) if os.path.exists(tmp) else 0
        _remove(tmp)  # before the free space is read
        full = disk_full(err, path, needed, written)
        if full is None:
            raise
        raise full from err
    finally:
        _remove(tmp)
    return path


def _remove(tmp: str) -> None:
    if os.path.exists(tmp):
        os.unlink(tmp)


def disk_full(
    err: BaseException, path: str | Path | None = None, needed: int | None = None,
    written: int = 0,
) -> DiskFullError | None:
    """The :class:`DiskFullError` an exception (or one it was raised from) stands for, or
    None where it is not a lack of space."""
    seen = set()
    while err is not None and id(err) not in seen:
        seen.add(id(err))
        if isinstance(err, DiskFullError):
            return err
        if isinstance(err, OSError) and err.errno in NO_SPACE:
            where = Path(path if path is not None else err.filename or ".")
            return DiskFullError(where, needed, _free_bytes(where), written)
        err = err.__cause__ or err.__context__
    return None


def _free_bytes(path: Path) -> int | None:
    for folder in (path, *path.parents):
        try:
            stats = os.statvfs(folder)
        except OSError:
            continue
        return stats.f_bavail * stats.f_frsize
    return None


def write_json(path: str | Path, data: Any) -> Path:
    """Write ``data`` as indented JSON, atomically."""
    text = json.dumps(data, indent=2, default=_jsonable) + "\n"
    return atomic_write(path, lambda tmp: tmp.write_text(text), len(text.encode()))


def write_text(path: str | Path, text: str) -> Path:
    return atomic_write(path, lambda tmp: tmp.write_text(text), len(text.encode()))


def _jsonable(value: Any) -> Any:
    if isinstance(value, torch.Tensor):
        return value.tolist()
    if isinstance(value, (np.generic, np.ndarray)):
        return value.tolist()
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")


def write_bytes(path: str | Path, data: bytes | memoryview) -> Path:
    """Write ``data`` atomically (its size is the space a full disk's message names)."""
    return atomic_write(path, lambda tmp: tmp.write_bytes(data), len(data))


def save_tensors(path: str | Path, tensors: dict[str, torch.Tensor]) -> Path:
    """Save tensors as safetensors, atomically (serialised in memory, then one plain write,
    so a full disk is an ``OSError`` of the write, not a library's own error)."""
    from safetensors.torch import save

    data = {k: v.detach().cpu().contiguous() for k, v in tensors.items()}
    return write_bytes(path, save(data))


def load_tensors(path: str | Path) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    return load_file(str(path))


def to_uint8(image: torch.Tensor) -> np.ndarray:
    """``(3|4, H, W)`` in [0, 1] -> ``(H, W, 3|4)`` uint8."""
    arr = image.detach().float().clamp(0, 1).mul(255).round().byte().cpu()
    return arr.permute(1, 2, 0).numpy()


def save_png(path: str | Path, image: torch.Tensor) -> Path:
    """Save one image ``(3, H, W)`` (RGB) or ``(4, H, W)`` (RGBA) in [0, 1] as PNG, atomically."""
    pil = Image.fromarray(to_uint8(image))
    return atomic_write(path, lambda tmp: pil.save(tmp, format="PNG"))


IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".ppm", ".pgm", ".tif", ".tiff", ".webp")


def is_image_file(path: str | Path) -> bool:
    """Whether ``path`` is a file with one of the image suffixes the package reads."""
    path = Path(path)
    return path.suffix.lower() in IMAGE_SUFFIXES and path.is_file()


def decode_image(img: Image.Image, size: tuple[int, int] | None = None) -> torch.Tensor:
    """The one decoder: a PIL image as ``(3, H, W)`` float RGB in [0, 1], resized (bicubic)
    to ``size`` ``(H, W)`` where it differs."""
    img = img.convert("RGB")
    if size is not None and img.size != (size[1], size[0]):
        img = img.resize((size[1], size[0]), Image.BICUBIC)
    arr = np.asarray(img, dtype=np.float32) / 255.0
    return torch.from_numpy(arr).permute(2, 0, 1).contiguous()


def read_image(path: str | Path, size: tuple[int, int] | None = None) -> torch.Tensor | None:
    """:func:`load_image`, or None where the file does not decode (a data pass skips and counts
    it). PIL raises OSError, SyntaxError, ValueError... on broken files: all mean "skip"."""
    try:
        with Image.open(path) as img:
            return decode_image(img, size)
    except Exception:
        return None


def load_image(path: str | Path, size: tuple[int, int] | None = None) -> torch.Tensor:
    """Read an image file as ``(3, H, W)`` float in [0, 1], optionally resized to ``size``.

    A missing file or one that does not decode is a clear error naming the path.
    """
    path = Path(path)
    if not path.is_file():
        raise MTIConfigError(f"image file not found: {path}")
    try:
        with Image.open(path) as img:
            return decode_image(img, size)
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as err:
        raise MTIConfigError(f"{path} is not a readable image ({err})") from err
