"""Figures without pyplot (so a notebook's own backend is left alone), a colour norm centred
on 0, and atomic figure saving."""

from __future__ import annotations

from pathlib import Path

import matplotlib
import numpy as np
from matplotlib.axes import Axes
from matplotlib.colors import CenteredNorm
from matplotlib.figure import Figure

from mti_lightning.core.io import atomic_write

DIVERGING = "RdBu_r"


def centered_norm(values: np.ndarray) -> CenteredNorm:
    """A norm with 0 at the centre of the colour map and the largest ``|value|`` at its ends."""
    return CenteredNorm(vcenter=0.0, halfrange=float(np.abs(values).max(initial=0.0)) or 1.0)


def activation_colours(values: np.ndarray) -> np.ndarray:
    """RGB in [0, 1] ``(n, 3)`` of each value: red excites, blue inhibits, white is 0."""
    cmap = matplotlib.colormaps[DIVERGING]
    return cmap(centered_norm(values)(values))[:, :3]


def new_figure() -> tuple[Figure, Axes]:
    fig = Figure(figsize=(6.4, 5.6))
    return fig, fig.subplots()


def save_figure(fig: Figure, path: Path, dpi: int = 120) -> Path:
    """Save a figure as PNG atomically."""
    return atomic_write(path, lambda tmp: fig.savefig(tmp, format="png", dpi=dpi))
