"""Stage 6, the atlas: icons composed into one image at their grid cells.

Each icon is blended over white by its transparency (from the search's pixel gradients), so
pixels the objective never cared about fade out, and framed by a border whose colour is the
activation the icon itself drives (red excites, blue inhibits, white is 0, the scale
symmetric around 0).
"""

from __future__ import annotations

import numpy as np
import torch
from PIL import Image

from mti_lightning.core.io import to_uint8
from mti_lightning.journeys.atlas.figures import activation_colours


def icon_rgba(image: torch.Tensor, alpha: torch.Tensor) -> Image.Image:
    """One icon ``(3, h, w)`` with alpha ``(h, w)`` as an RGBA PIL image."""
    return Image.fromarray(to_uint8(torch.cat([image, alpha[None]])), mode="RGBA")


def over_white(image: torch.Tensor, alpha: torch.Tensor) -> torch.Tensor:
    """Blend ``(3, h, w)`` over white with ``alpha (h, w)``."""
    return image * alpha[None] + (1.0 - alpha[None])


def compose_atlas(
    images: torch.Tensor,
    alpha: torch.Tensor,
    cells: np.ndarray,
    activation: np.ndarray,
    grid: int,
    size: int,
) -> Image.Image:
    """The atlas: a ``grid x grid`` board of side ``size // grid * grid`` px with icon ``k``
    (``images (K, 3, h, w)``, ``alpha (K, h, w)``) framed in cell ``cells[k]``."""
    cell_px = size // grid
    border = max(1, cell_px // 14)
    inner = max(1, cell_px - 2 * border)
    board = Image.new("RGB", (cell_px * grid, cell_px * grid), (255, 255, 255))
    colours = (activation_colours(activation) * 255).round().astype(np.uint8)
    for k, cell in enumerate(cells):
        row, col = divmod(int(cell), grid)
        x, y = col * cell_px, row * cell_px
        frame = Image.new("RGB", (cell_px, cell_px), tuple(int(c) for c in colours[k]))
        icon = Image.fromarray(to_uint8(over_white(images[k], alpha[k])))
        frame.paste(icon.resize((inner, inner), Image.LANCZOS), (border, border))
        board.paste(frame, (x, y))
    return board
