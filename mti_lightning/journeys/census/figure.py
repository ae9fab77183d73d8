"""The census's by-depth figure: where tension concentrates across the model's layers.

Raw tension is not comparable between layers (their scales differ), so the figure shows the
scale-free numbers: each unit's mean tension ratio and its fraction of tense images, one
column of points per layer at its relative depth, with the layer's median, and the share of
the census's 10% highest-ranked units that each layer holds.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
from matplotlib.figure import Figure

from mti_lightning.core.io import atomic_write


def depth_figure(table: dict[str, Any], path: Path) -> Path:
    """Draw ``table`` (``units.json``'s content) by layer depth into ``path`` (PNG)."""
    layers = table["layers"]
    fig = Figure(figsize=(8.0, 7.5))
    axes = fig.subplots(3, 1, sharex=True)
    rng = np.random.default_rng(0)
    depths = [layer["depth"] for layer in layers]
    span = (max(depths) - min(depths)) if len(depths) > 1 else 1.0
    width = 0.15 * span / max(len(layers), 1)
    top_n = max(1, len(table["units"]) // 10)
    top = [r["layer"] for r in table["units"][:top_n]]
    for ax, key, label in (
        (axes[0], "ratio_mean", "mean tension ratio\nmin/max(E+, E-)"),
        (axes[1], "frac_tense", f"fraction of tense images\n(T > {table['threshold']:g} x drive)"),
    ):
        for layer in layers:
            values = np.array([r[key] for r in table["units"] if r["layer"] == layer["name"]])
            x = layer["depth"] + rng.uniform(-width, width, values.size)
            ax.scatter(x, values, s=6, alpha=0.5, color="tab:purple", linewidths=0)
            if values.size:
                ax.hlines(np.median(values), layer["depth"] - 2 * width,
                          layer["depth"] + 2 * width, color="black", linewidth=2)
        ax.set_ylabel(label)
    shares = [top.count(layer["name"]) / top_n for layer in layers]
    axes[2].bar(depths, shares, width=4 * width, color="tab:red")
    axes[2].set_ylabel(f"share of the top {top_n}\n(by {table.get('rank_by', 'tension_p90')})")
    axes[2].set_xlabel("relative depth")
    axes[2].set_xticks(depths, [f"{layer['name']}\n{layer['depth']:.2f}" for layer in layers],
                       fontsize=7, rotation=30)
    fig.suptitle(f"Inhibition census of {table['model']} over {table['n_images']} images "
                 f"of {table['data']}: tension by depth")
    fig.tight_layout()
    return atomic_write(path, lambda tmp: fig.savefig(tmp, format="png", dpi=110))
