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

from mti_lightning.core.errors import MTIConfigError


def atomic_write(path: str | Path, write: Callable[[Path], None]) -> Path:
    """Call ``write(tmp)`` on a temporary file beside ``path``, then rename it into place, so
    ``path`` is either absent or whole."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        write(Path(tmp))
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return path


def write_json(path: str | Path, data: Any) -> Path:
    """Write ``data`` as indented JSON, atomically."""
    text = json.dumps(data, indent=2, default=_jsonable)
    return atomic_write(path, lambda tmp: tmp.write_text(text + "\n"))


def write_text(path: str | Path, text: str) -> Path:
    return atomic_write(path, lambda tmp: tmp.write_text(text))


def _jsonable(value: Any) -> Any:
    if isinstance(value, torch.Tensor):
        return value.tolist()
    if isinstance(value, (np.generic, np.ndarray)):
        return value.tolist()
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")


def save_tensors(path: str | Path, tensors: dict[str, torch.Tensor]) -> Path:
    """Save tensors as safetensors, atomically."""
    from safetensors.torch import save_file

    data = {k: v.detach().cpu().contiguous() for k, v in tensors.items()}
    return atomic_write(path, lambda tmp: save_file(data, str(tmp)))


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
