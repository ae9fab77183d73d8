"""A unit's tension scatter: ``E+`` against ``E-`` for every image of the data set, coloured by
the unit's activation (red excites, blue inhibits, centred on 0), with the diagonal where the
two balance and the unit's activation histogram beside it (PNG, matplotlib)."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from mti_lightning.core.io import atomic_write


def tension_scatter(
    path: Path,
    e_plus: torch.Tensor,
    e_minus: torch.Tensor,
    activation: torch.Tensor,
    title: str,
    hist: Mapping[str, Any] | None = None,
) -> Path:
    """Write the scatter of one unit's per-image ``e_plus``/``e_minus`` (N,) to ``path``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.colors import TwoSlopeNorm

    x, y, c = (t.float().cpu().numpy() for t in (e_plus, e_minus, activation))
    span = float(max(abs(c.min()), abs(c.max()), 1e-6))
    panels = 2 if hist and hist.get("counts") else 1
    fig, axes = plt.subplots(1, panels, figsize=(4.2 * panels, 3.8), squeeze=False)
    ax = axes[0][0]
    dots = ax.scatter(
        x, y, c=c, s=16, cmap="coolwarm", norm=TwoSlopeNorm(0.0, -span, span), linewidths=0
    )
    top = float(max(x.max(), y.max(), 1e-6)) * 1.05
    ax.plot([0, top], [0, top], color="0.6", lw=0.8, ls="--")
    ax.set_xlim(0, top)
    ax.set_ylim(0, top)
    ax.set_xlabel("E+ (excitation)")
    ax.set_ylabel("E- (inhibition)")
    ax.set_title(title.replace("$", r"\$"), fontsize=9)  # a name is text, never mathtext
    fig.colorbar(dots, ax=ax, label="activation")
    if panels == 2:
        edges, counts = hist["edges"], hist["counts"]
        widths = [b - a for a, b in zip(edges[:-1], edges[1:])]
        axes[0][1].bar(edges[:-1], counts, width=widths, align="edge", color="0.5")
        axes[0][1].axvline(0, color="k", lw=0.6)
        axes[0][1].set_xlabel("activation")
        axes[0][1].set_title("activation over the data", fontsize=9)
    fig.tight_layout()
    atomic_write(path, lambda tmp: fig.savefig(tmp, format="png", dpi=80))
    plt.close(fig)
    return path
