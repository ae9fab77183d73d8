"""A unit's tension scatter: ``E+`` against ``E-`` for every image of the data set, coloured by
the unit's activation (red excites, blue inhibits, centred on 0), with the diagonal where the
two balance and the unit's activation histogram beside it.

A census draws one per unit (thousands for a whole model), so it is rasterised directly with
numpy and PIL (a few milliseconds) rather than laid out by matplotlib (about a second each);
only matplotlib's colour map is borrowed, as a lookup table.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image, ImageDraw, ImageFont

from mti_lightning.core.io import atomic_write

PANEL = 220  # side of the scatter's plot area, pixels
MARGIN = (44, 26, 14, 34)  # left, top, right, bottom
HIST_W = 170
INK, GRID = (40, 40, 40), (160, 160, 160)


def _colours(activation: np.ndarray) -> np.ndarray:
    """RGB (N, 3) uint8 of ``activation`` on the coolwarm map centred on 0."""
    from matplotlib import colormaps

    span = float(max(np.abs(activation).max(initial=0.0), 1e-6))
    t = np.clip(0.5 + 0.5 * activation / span, 0.0, 1.0)
    lut = (colormaps["coolwarm"](np.linspace(0, 1, 256))[:, :3] * 255).astype(np.uint8)
    return lut[np.round(t * 255).astype(int)]


def _label(value: float) -> str:
    return f"{value:.3g}"


def _points(canvas: np.ndarray, x: np.ndarray, y: np.ndarray, c: np.ndarray) -> float:
    """Draw the images as 3x3 dots into ``canvas``; returns the axes' upper limit."""
    left, top = MARGIN[0], MARGIN[1]
    hi = float(max(x.max(initial=0.0), y.max(initial=0.0), 1e-6)) * 1.05
    px = left + np.clip(x / hi * (PANEL - 1), 0, PANEL - 1).astype(int)
    py = top + PANEL - 1 - np.clip(y / hi * (PANEL - 1), 0, PANEL - 1).astype(int)
    order = np.argsort(np.abs(c))  # strong activations drawn last, on top
    colours = _colours(c)[order]
    for dy in (-1, 0, 1):
        for dx in (-1, 0, 1):
            canvas[py[order] + dy, px[order] + dx] = colours
    return hi


def _axes(draw: ImageDraw.ImageDraw, hi: float, font: ImageFont.ImageFont) -> None:
    left, top = MARGIN[0], MARGIN[1]
    draw.rectangle([left - 1, top - 1, left + PANEL, top + PANEL], outline=INK)
    draw.line([left, top + PANEL - 1, left + PANEL - 1, top], fill=GRID)  # E+ = E-
    draw.text((left, top + PANEL + 3), "0", fill=INK, font=font)
    draw.text((left + PANEL - 30, top + PANEL + 3), _label(hi), fill=INK, font=font)
    draw.text((left + PANEL // 2 - 40, top + PANEL + 16), "E+ (excitation)", fill=INK, font=font)
    draw.text((2, top), _label(hi), fill=INK, font=font)
    draw.text((2, top + PANEL // 2), "E-", fill=INK, font=font)


def _hist_panel(
    draw: ImageDraw.ImageDraw, hist: Mapping[str, Any], x0: int, font: ImageFont.ImageFont
) -> None:
    edges = np.asarray(hist["edges"], dtype=float)
    counts = np.asarray(hist["counts"], dtype=float)
    top, height = MARGIN[1], PANEL
    lo, hi = float(edges[0]), float(edges[-1])
    width = max(hi - lo, 1e-12)
    peak = max(float(counts.max(initial=0.0)), 1.0)
    for a, b, n in zip(edges[:-1], edges[1:], counts):
        xa = x0 + int((a - lo) / width * (HIST_W - 1))
        xb = max(xa, x0 + int((b - lo) / width * (HIST_W - 1)) - 1)
        ya = top + height - 1 - int(n / peak * (height - 1))
        draw.rectangle([xa, ya, xb, top + height - 1], fill=(128, 128, 128))
    if lo < 0 < hi:
        xz = x0 + int(-lo / width * (HIST_W - 1))
        draw.line([xz, top, xz, top + height - 1], fill=INK)
    draw.rectangle([x0 - 1, top - 1, x0 + HIST_W, top + height], outline=INK)
    draw.text((x0, top + height + 3), _label(lo), fill=INK, font=font)
    draw.text((x0 + HIST_W - 30, top + height + 3), _label(hi), fill=INK, font=font)
    draw.text((x0 + 30, top + height + 16), "activation", fill=INK, font=font)


def tension_scatter(
    path: Path,
    e_plus: torch.Tensor,
    e_minus: torch.Tensor,
    activation: torch.Tensor,
    title: str,
    hist: Mapping[str, Any] | None = None,
) -> Path:
    """Write the scatter of one unit's per-image ``e_plus``/``e_minus`` (N,) to ``path``
    (PNG), coloured by ``activation``, with the histogram ``{edges, counts}`` beside it."""
    x, y, c = (t.float().cpu().numpy().reshape(-1) for t in (e_plus, e_minus, activation))
    with_hist = bool(hist and hist.get("counts"))
    width = MARGIN[0] + PANEL + MARGIN[2] + (HIST_W + MARGIN[2] + 10 if with_hist else 0)
    height = MARGIN[1] + PANEL + MARGIN[3]
    canvas = np.full((height, width, 3), 255, dtype=np.uint8)
    font = ImageFont.load_default()
    hi = _points(canvas, x, y, c)
    image = Image.fromarray(canvas)
    draw = ImageDraw.Draw(image)
    _axes(draw, hi, font)
    if with_hist:
        _hist_panel(draw, hist, MARGIN[0] + PANEL + MARGIN[2] + 10, font)
    draw.text((4, 4), title[:70], fill=INK, font=font)
    atomic_write(path, lambda tmp: image.save(tmp, format="PNG"))
    return path
