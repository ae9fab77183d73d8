"""The figure of a placement: the atlas with a search's images marked on it (each image's
trajectory as a line from a dot at the start, the image itself as a framed thumbnail at its end
point, its + and - inversions as small ``+``/``-`` discs) and, beside it, one row per image:
the image, the icon of its nearest occupied cell, and the figures that place it."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import matplotlib.pyplot as plt
import numpy as np
import torch
from matplotlib.patches import Rectangle
from PIL import Image

from mti_lightning.journeys.atlas.figures import save_figure
from mti_lightning.journeys.atlas.placement import AtlasMap


def _caption(rec: dict[str, Any]) -> str:
    where = "on the data's map" if rec["on_map"] else "off the data's map"
    tense = "tense" if rec["cell_tense"] else "not tense"
    return (
        f"#{rec['image']} {rec['feature']}\n"
        f"act {rec['activation']:.2f}  E+ {rec['e_plus']:.2f}  E- {rec['e_minus']:.2f}\n"
        f"nearest cell {tuple(rec['cell'])} (icon left):\n"
        f"  icon act {rec['cell_icon_activation']:.2f}, data act "
        f"{rec['cell_mean_activation']:.2f}\n"
        f"  data T {rec['cell_mean_tension']:.2f} (image T {rec['tension']:.2f}):\n"
        f"  {tense}, pct {rec['cell_tension_pct']:.0f} of the data set\n"
        f"nearest data image, x median NN:\n"
        f"  {rec['nn_dist']:.1f} layout, {rec['nn_dist_hd']:.1f} attribution\n"
        f"  {where}"
    )


def placement_figure(
    atlas: AtlasMap, placement: dict[str, Any], images: torch.Tensor, path: Path
) -> Path:
    """Draw the placement of ``images`` (``(K, 3, H, W)`` in [0, 1]) and save it to ``path``."""
    recs = placement["images"]
    n = len(recs)
    colours = plt.get_cmap("tab10")(np.arange(n) % 10)
    fig = plt.figure(figsize=(13, max(7.5, 1.9 * n)))
    grid = fig.add_gridspec(max(n, 4), 4, width_ratios=[6.5, 1.0, 1.0, 2.6], wspace=0.08)
    ax = fig.add_subplot(grid[:, 0])
    with Image.open(atlas.atlas_png) as board:
        ax.imshow(np.asarray(board.convert("RGB")), extent=(0, 1, 0, 1), interpolation="lanczos")
    side = min(max(1.2 / atlas.grid, 0.06), 0.12)
    for k, rec in enumerate(recs):
        c = colours[k]
        xy = np.clip([[p["x"], p["y"]] for p in rec["trajectory"]], 0.0, 1.0)
        ax.plot(xy[:, 0], xy[:, 1], "-", color=c, lw=1.6, alpha=0.9)
        ax.plot(xy[0, 0], xy[0, 1], "o", color=c, ms=5, mec="k", mew=0.5)
        x, y = xy[-1]
        thumb = images[k].clamp(0, 1).permute(1, 2, 0).numpy()
        box = (x - side / 2, x + side / 2, y - side / 2, y + side / 2)
        ax.imshow(thumb, extent=box, zorder=5)
        ax.add_patch(Rectangle((box[0], box[2]), side, side, fill=False, ec=c, lw=2.5, zorder=6))
        for sign, mark in (("plus", "+"), ("minus", "-")):
            if sign in rec:
                px, py = np.clip([rec[sign]["x"], rec[sign]["y"]], 0.0, 1.0)
                ax.text(
                    px, py, mark, color="k", ha="center", va="center", fontsize=9,
                    fontweight="bold", zorder=7,
                    bbox={"boxstyle": "circle,pad=0.15", "fc": c, "ec": "k", "lw": 0.5},
                )  # fmt: skip
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1)
    ax.set_xticks([])
    ax.set_yticks([])
    ax.set_title(f"search images on the atlas of {atlas.describe()}", fontsize=11)
    for k, rec in enumerate(recs):
        left = fig.add_subplot(grid[k, 1])
        left.imshow(images[k].clamp(0, 1).permute(1, 2, 0).numpy())
        left.set_xticks([])
        left.set_yticks([])
        for spine in left.spines.values():
            spine.set_edgecolor(colours[k])
            spine.set_linewidth(3)
        icon = fig.add_subplot(grid[k, 2])
        icon.imshow(np.asarray(atlas.icons[rec["icon"]].convert("RGBA")))
        icon.axis("off")
        text = fig.add_subplot(grid[k, 3])
        text.axis("off")
        text.text(0.0, 0.5, _caption(rec), va="center", fontsize=7, family="monospace")
    return save_figure(fig, path, dpi=110)
