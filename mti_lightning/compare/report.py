"""The report of an architecture comparison: table (CSV, text, W&B) and its two figures.

``tension_by_model.png``: per model, box plots of tension (log scale) and tension ratio over
every measured (unit, image). ``data_vs_search.png``: per searched unit, the largest tension
found in the image set against the tension the MTI search reached (above the diagonal: the
search found a tenser image than the data holds).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from mti_lightning.compare.plan import Plan
from mti_lightning.core.io import atomic_write, write_text
from mti_lightning.shells.tables import log_to_wandb, text_table, write_csv

COLUMNS = (
    "model",
    "layer",
    "unit",
    "act_mean",
    "act_std",
    "e_plus_mean",
    "e_minus_mean",
    "tension_mean",
    "tension_max",
    "ratio_mean",
    "search_tension",
    "search_ratio",
    "search_over_data",
)
_FLOOR = 1e-8  # tension of a silent (unit, image) pair, for log axes


def _subplots(*grid: int, figsize: tuple[float, float]) -> tuple[Any, Any]:
    """A figure without pyplot (a notebook's own backend is left alone) and its axes."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=figsize)
    return fig, fig.subplots(*grid)


def _save(fig: Any, path: Path) -> Path:
    fig.tight_layout()
    atomic_write(path, lambda tmp: fig.savefig(tmp, format="png", dpi=110))
    return path


def tension_figure(path: Path, data: dict[str, dict[str, torch.Tensor]], title: str) -> Path:
    """Box plots per model of tension (log) and tension ratio over all (unit, image) pairs."""
    names = list(data)
    fig, (ax_t, ax_r) = _subplots(1, 2, figsize=(3 + 1.6 * len(names), 4))
    tension = [data[n]["tension"].flatten() for n in names]
    ratio = [data[n]["tension_ratio"].flatten().numpy() for n in names]
    # log axis: pairs with zero tension (a silent attribution) are counted, not drawn
    ax_t.boxplot([t[t > 0].numpy() for t in tension], showfliers=True)
    ax_t.set_yscale("log")
    ax_t.set_ylabel("tension min(E+, E-)")
    zeros = [int((t <= 0).sum()) for t in tension]
    ax_t.set_xticks(
        range(1, len(names) + 1),
        [f"{n}\n({z} zero)" if z else n for n, z in zip(names, zeros)],
        rotation=20,
        fontsize=8,
    )
    ax_r.boxplot(ratio, showfliers=True)
    ax_r.set_ylim(0, 1)
    ax_r.set_ylabel("tension ratio min/max")
    ax_r.set_xticks(range(1, len(names) + 1), names, rotation=20, fontsize=8)
    fig.suptitle(title, fontsize=9)
    return _save(fig, path)


def search_figure(path: Path, rows: list[dict[str, Any]], title: str) -> Path:
    """Largest data tension against search tension, one point per searched unit."""
    fig, ax = _subplots(figsize=(4.8, 4.4))
    searched = [r for r in rows if r["search_tension"] is not None]
    for model in dict.fromkeys(r["model"] for r in searched):
        pts = [r for r in searched if r["model"] == model]
        x = [max(r["tension_max"], _FLOOR) for r in pts]
        y = [max(r["search_tension"], _FLOOR) for r in pts]
        ax.scatter(x, y, label=model, s=22)
    if searched:
        values = [max(r[k], _FLOOR) for r in searched for k in ("tension_max", "search_tension")]
        lo, hi = min(values) / 2, max(values) * 2
        ax.plot([lo, hi], [lo, hi], color="grey", lw=0.8, ls="--")
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.legend(fontsize=7)
    ax.set_xlabel("max tension in the image set")
    ax.set_ylabel("tension reached by MTI search")
    ax.set_title(title, fontsize=9)
    return _save(fig, path)


def write_report(
    cfg: dict[str, Any],
    run_dir: Path,
    header: str,
    plans: list[Plan],
    rows: list[dict[str, Any]],
    data: dict[str, dict[str, torch.Tensor]],
    image_root: Path | None = None,
) -> None:
    """``compare.csv``, ``compare.txt`` (header + table), figures, and the W&B table with
    each unit's tensest data image (under ``image_root``) and MTI as image cells, and the
    report's files as an artifact."""
    write_csv(run_dir / "compare.csv", rows)
    table = text_table(rows, COLUMNS)
    write_text(run_dir / "compare.txt", f"{header}\n\n{table}\n")
    title = ", ".join(f"{p.name} {p.layer}" for p in plans)
    figures = [
        tension_figure(run_dir / "tension_by_model.png", data, title),
        search_figure(run_dir / "data_vs_search.png", rows, title),
    ]

    def found(path: Path) -> Path | None:
        return path if path.is_file() else None

    images = {
        "data_image": [
            found(image_root / r["tension_max_image"]) if image_root is not None else None
            for r in rows
        ],
        "mti_image": [
            found(run_dir / r["search_image"]) if r["search_image"] else None for r in rows
        ],
    }
    outputs = ["compare.csv", "compare.txt", *(f.name for f in figures), "data"]
    log_to_wandb(cfg, run_dir, "comparison", rows, figures, images=images, outputs=outputs)
    print(header)
    print(table)
    print(f"mti: comparison in {run_dir} (compare.csv, compare.txt, *.png)")
