"""Stage 3, the tension scatter: ``E+`` against ``E-`` of every image, coloured by activation.

Activation uses a diverging map centred on 0 (red excites, blue inhibits); the selected images
are outlined. Maximally tense images sit far out on both axes, near the diagonal.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from mti_lightning.journeys.atlas.figures import DIVERGING, centered_norm, new_figure, save_figure


def tension_scatter(
    e_plus: np.ndarray,
    e_minus: np.ndarray,
    activation: np.ndarray,
    selected: np.ndarray,
    path: Path,
    title: str,
) -> Path:
    """Plot and save the scatter; ``selected`` is a boolean mask over the images."""
    fig, ax = new_figure()
    order = np.argsort(np.abs(activation))
    points = ax.scatter(
        e_plus[order],
        e_minus[order],
        c=activation[order],
        cmap=DIVERGING,
        norm=centered_norm(activation),
        s=9,
        linewidths=0,
    )
    sel = np.flatnonzero(selected)
    ax.scatter(
        e_plus[sel],
        e_minus[sel],
        facecolors="none",
        edgecolors="black",
        s=22,
        linewidths=0.5,
        label=f"selected ({sel.size})",
    )
    hi = float(max(e_plus.max(initial=0.0), e_minus.max(initial=0.0), 1e-12))
    ax.plot([0, hi], [0, hi], color="0.6", linewidth=0.8, linestyle="--", zorder=0)
    ax.set_xlabel("E+ (excitation, L1)")
    ax.set_ylabel("E- (inhibition, L1)")
    ax.set_title(title, fontsize=10)
    ax.legend(loc="upper left", fontsize=8, frameon=False)
    fig.colorbar(points, ax=ax, label="activation")
    fig.tight_layout()
    return save_figure(fig, path)
