"""Matplotlib on the Agg backend, a colour norm centred on 0, and atomic figure saving."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from matplotlib.colors import CenteredNorm  # noqa: E402

from mti_lightning.core.io import atomic_write  # noqa: E402

DIVERGING = "RdBu_r"


def centered_norm(values: np.ndarray) -> CenteredNorm:
    """A norm with 0 at the centre of the colour map and the largest ``|value|`` at its ends."""
    return CenteredNorm(vcenter=0.0, halfrange=float(np.abs(values).max(initial=0.0)) or 1.0)


def activation_colours(values: np.ndarray) -> np.ndarray:
    """RGB in [0, 1] ``(n, 3)`` of each value: red excites, blue inhibits, white is 0."""
    cmap = matplotlib.colormaps[DIVERGING]
    return cmap(centered_norm(values)(values))[:, :3]


def new_figure() -> tuple[plt.Figure, plt.Axes]:
    return plt.subplots(figsize=(6.4, 5.6))


def save_figure(fig: plt.Figure, path: Path, dpi: int = 120) -> Path:
    """Save a figure as PNG atomically and close it."""
    try:
        return atomic_write(path, lambda tmp: fig.savefig(tmp, format="png", dpi=dpi))
    finally:
        plt.close(fig)
