"""The circuit figure: the unit in the middle, its top-k inhibitory channels on the left
(blue ``#0571b0``) and excitatory ones on the right (red ``#ce1e34``), each with its feature
visualisation and its kernel (the expanded weight over the unit's window, blue negative and
red positive), edge widths by share of E- or E+; with ``depth=2`` each channel lists the
upstream channels that inhibit and excite it most. Below: the ablation and the echo.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from mti_lightning.core.io import atomic_write

INHIBIT = "#0571b0"
EXCITE = "#ce1e34"


def _image(ax: Any, image: torch.Tensor | None, colour: str) -> None:
    ax.set_xticks([])
    ax.set_yticks([])
    if image is not None:
        ax.imshow(image.permute(1, 2, 0).clamp(0, 1).numpy())
    for side in ax.spines.values():
        side.set_edgecolor(colour)
        side.set_linewidth(2.5)


def _kernel(ax: Any, kernel: torch.Tensor, scale: float) -> None:
    ax.imshow(kernel.numpy(), cmap="RdBu_r", vmin=-scale, vmax=scale)
    ax.set_xticks([])
    ax.set_yticks([])


def _label(row: dict[str, Any], upstream: dict[str, Any] | None) -> str:
    text = (
        f"ch {row['channel']}\nE- {100 * row['share_minus']:.0f}%  E+ "
        f"{100 * row['share_plus']:.0f}%\nw {row['expanded_weight']:+.3g}"
    )
    if row["cancels"]:
        text += "\ncancels"
    if upstream:
        inh = ",".join(str(c) for c, _ in upstream["inhibitory"])
        exc = ",".join(str(c) for c, _ in upstream["excitatory"])
        text += f"\n<- inh {inh}\n<- exc {exc}"
    return text


def circuit_figure(
    path: Path,
    title: str,
    rows: dict[int, dict[str, Any]],
    inhibitory: list[int],
    excitatory: list[int],
    kernels: torch.Tensor,
    viz: dict[Any, torch.Tensor],
    ablation: dict[str, Any],
    echo: dict[str, Any],
    upstream: dict[int, dict[str, Any]] | None = None,
) -> Path:
    """Draw the circuit into ``path`` (PNG). ``rows``: per channel its numbers (share_minus,
    share_plus, expanded_weight, cancels); ``kernels``: ``(C, kh, kw)``; ``viz``: images by
    channel and ``"unit"`` (missing ones are left blank)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    n = max(len(inhibitory), len(excitatory), 1)
    height = 1.15 * n + 3.2
    fig = plt.figure(figsize=(13, height))
    edges = fig.add_axes([0, 0, 1, 1], zorder=0)
    edges.set_xlim(0, 1)
    edges.set_ylim(0, 1)
    edges.axis("off")
    top, bottom = 1 - 0.5 / height, 3.0 / height
    step = (top - bottom) / n
    box_h = min(0.9 * step, 1.0 / height)
    box_w = box_h * height / 13
    scale = float(kernels.abs().max()) or 1.0
    unit_y = (top + bottom) / 2
    unit_ax = fig.add_axes([0.5 - 1.5 * box_w, unit_y - 1.5 * box_h, 3 * box_w, 3 * box_h])
    _image(unit_ax, viz.get("unit"), "black")
    unit_ax.set_title(title, fontsize=9)
    shares = [rows[c]["share_minus"] for c in inhibitory] + [rows[c]["share_plus"] for c in excitatory]
    biggest = max(shares, default=0) or 1.0
    for side, chosen, colour, key in (
        (0, inhibitory, INHIBIT, "share_minus"),
        (1, excitatory, EXCITE, "share_plus"),
    ):
        x_img = 0.02 if side == 0 else 0.98 - box_w
        x_ker = x_img + (1.1 * box_w if side == 0 else -1.1 * box_w)
        for i, c in enumerate(chosen):
            y = top - (i + 0.5) * step
            ax = fig.add_axes([x_img, y - box_h / 2, box_w, box_h])
            _image(ax, viz.get(c), colour)
            kax = fig.add_axes([x_ker, y - box_h / 2, box_w, box_h])
            _kernel(kax, kernels[c], scale)
            text_x = x_ker + (1.15 * box_w if side == 0 else -0.05 * box_w)
            edges.text(
                text_x,
                y,
                _label(rows[c], (upstream or {}).get(c)),
                ha="left" if side == 0 else "right",
                va="center",
                fontsize=7,
                color=colour,
            )
            start = x_ker + box_w + 0.12 if side == 0 else x_ker - 0.12
            end = 0.5 - 1.5 * box_w if side == 0 else 0.5 + 1.5 * box_w
            width = 0.5 + 7 * rows[c][key] / biggest
            edges.plot([start, end], [y, unit_y], color=colour, lw=width, alpha=0.75)
    if ablation:
        controls = ablation["rise_control_mean"]
        edges.text(
            0.02,
            2.4 / height,
            f"ablation on the {ablation['images']} tensest images: activation "
            f"{ablation['intact']:+.3g} intact; without the {len(ablation['channels'])} "
            f"inhibitory channels {ablation['inhibitory']:+.3g} (rise "
            f"{ablation['rise_inhibitory']:+.3g}); without k random channels rise "
            f"{controls:+.3g} (mean of {len(ablation['controls'])} seeds, max "
            f"{ablation['rise_control_max']:+.3g})",
            fontsize=8,
        )
    if echo and "skipped" not in echo:
        ax = fig.add_axes([0.08, 0.5 / height, 0.35, 1.55 / height])
        deg = echo["orientations_deg"]
        ax.plot(deg, echo["curve_before"], "o-", color="black", label="intact")
        ax.plot(deg, echo["curve_after"], "o-", color=INHIBIT, label="negative weights of the inhibitors removed")
        ax.axvline(echo["inhibiting_deg"], color=INHIBIT, ls=":", lw=1)
        ax.set_xticks(deg)
        ax.set_xlabel("orientation (deg); dotted: largest E-", fontsize=7)
        ax.set_ylabel("mean activation", fontsize=7)
        ax.tick_params(labelsize=6)
        ax.legend(fontsize=6)
        ax.set_title("the echo", fontsize=8)
    elif echo:
        edges.text(0.02, 1.6 / height, f"echo skipped: {echo['skipped']}", fontsize=8)
    edges.text(
        0.55,
        1.6 / height,
        "kernels: expanded weight over the unit's window (blue negative, red positive);\n"
        "edge width: share of the unit's E- (left) or E+ (right) over the data",
        fontsize=7,
    )

    def save(tmp: Path) -> None:
        fig.savefig(tmp, dpi=110, format="png")

    try:
        return atomic_write(path, save)
    finally:
        plt.close(fig)
