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


def load_image(path: str | Path, size: tuple[int, int] | None = None) -> torch.Tensor:
    """Read an image file as ``(3, H, W)`` float in [0, 1], optionally resized to ``size``.

    A missing file or one that does not decode is a clear error naming the path.
    """
    path = Path(path)
    if not path.is_file():
        raise MTIConfigError(f"image file not found: {path}")
    try:
        with Image.open(path) as img:
            img = img.convert("RGB")
            if size is not None:
                img = img.resize((size[1], size[0]), Image.BICUBIC)
            arr = np.asarray(img, dtype=np.float32) / 255.0
    except (UnidentifiedImageError, OSError) as err:
        raise MTIConfigError(f"{path} is not a readable image ({err})") from err
    return torch.from_numpy(arr).permute(2, 0, 1).contiguous()
