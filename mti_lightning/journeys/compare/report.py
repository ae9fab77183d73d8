"""The report of an architecture comparison: table (CSV, text, W&B), findings and figures.

``compare_report.png`` (with ``compare_report.md``): per model, where the strongest inhibition
lies relative to each tuned unit's preference, the R2 of orientation tuning of every unit,
mean ``E+`` against ``E-`` per measured unit, and the MTI search's tension over the data's.
``tension_by_model.png``: per model, box plots of tension (log scale) and tension ratio over
every measured (unit, image). ``data_vs_search.png``: per searched unit, the largest tension
found in the image set against the tension the MTI search reached (above the diagonal: the
search found a tenser image than the data holds). Never-tense units (zero tension) have no
place on a log axis: they are counted and listed in the figures' notes and the text, not drawn.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import torch

from mti_lightning.core.config_schema import MTIConfig
from mti_lightning.core.io import atomic_write, write_text
from mti_lightning.journeys.compare.findings import OFFSETS_DEG, findings_text, summarize
from mti_lightning.journeys.compare.plan import Plan, compare_group
from mti_lightning.journeys.compare.tuning import TUNED_R2, Tuning
from mti_lightning.shells.tables import log_to_wandb, text_table, write_csv

COLUMNS = (
    "model",
    "layer",
    "unit",
    "r2",
    "preferred_deg",
    "inhibition_offset_deg",
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


def _never_note(rows: list[dict[str, Any]]) -> str:
    """'not drawn: never tense: model units ...' for the units with zero tension, or ''."""
    never: dict[str, list[int]] = {}
    for r in rows:
        if r["tension_max"] == 0:
            never.setdefault(r["model"], []).append(r["unit"])
    if not never:
        return ""
    parts = [f"{m} {', '.join(map(str, u))}" for m, u in never.items()]
    return "not drawn (never tense): " + "; ".join(parts)


def drawable(
    rows: list[dict[str, Any]], key: str
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Rows with a value of ``key``, split into those a log axis can draw (positive data and
    ``key`` tension) and those to list instead (zero tension: never tense)."""
    having = [r for r in rows if r[key] is not None]
    drawn = [r for r in having if r["tension_max"] > 0 and r[key] > 0]
    return drawn, [r for r in having if r not in drawn]


def _log_scatter(ax: Any, drawn: list[dict[str, Any]], x: str, y: str, size: int) -> None:
    """``y`` against ``x`` per row, one colour per model, on log axes with the diagonal."""
    for model in dict.fromkeys(r["model"] for r in drawn):
        pts = [r for r in drawn if r["model"] == model]
        ax.scatter([r[x] for r in pts], [r[y] for r in pts], s=size, label=model)
    if drawn:
        values = [r[k] for r in drawn for k in (x, y)]
        lo, hi = min(values) / 2, max(values) * 2
        ax.plot([lo, hi], [lo, hi], color="grey", lw=0.8, ls="--")
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.legend(fontsize=7)


def search_figure(path: Path, rows: list[dict[str, Any]], title: str) -> Path:
    """Largest data tension against search tension, one point per searched unit; units with
    zero tension in the data or the search are listed under the plot, not drawn."""
    fig, ax = _subplots(figsize=(4.8, 4.6))
    drawn, zero = drawable(rows, "search_tension")
    _log_scatter(ax, drawn, "tension_max", "search_tension", size=22)
    if zero:
        note = ", ".join(f"{r['model']} {r['unit']}" for r in zero)
        ax.text(
            0.02,
            -0.2,
            f"not drawn (zero tension): {note}",
            transform=ax.transAxes,
            fontsize=6,
            va="top",
            wrap=True,
        )
    ax.set_xlabel("max tension in the image set")
    ax.set_ylabel("tension reached by MTI search")
    ax.set_title(title, fontsize=9)
    return _save(fig, path)


def report_figure(
    path: Path,
    summaries: list[dict[str, Any]],
    tunings: dict[str, Tuning],
    rows: list[dict[str, Any]],
) -> Path:
    """The findings per model in four panels (see the module docstring)."""
    names = [s["model"] for s in summaries]
    fig, axes = _subplots(2, 2, figsize=(11, 8.4))
    ax = axes[0][0]
    width = 0.8 / max(1, len(names))
    for k, s in enumerate(summaries):
        total = max(1, s["tuned"])
        share = [s["offsets"][o] / total for o in OFFSETS_DEG]
        x = [i + (k - (len(names) - 1) / 2) * width for i in range(len(OFFSETS_DEG))]
        ax.bar(x, share, width, label=f"{s['model']} ({s['tuned']}/{s['channels']} tuned)")
    ax.set_xticks(range(len(OFFSETS_DEG)), [f"{o:g}" for o in OFFSETS_DEG])
    ax.set_xlabel("tuning minimum (least drive): degrees from the preferred orientation")
    ax.set_ylabel("share of tuned units")
    ax.set_title(f"tuning minimum (units with R2 > {TUNED_R2}); see the text", fontsize=9)
    ax.legend(fontsize=7)
    ax = axes[0][1]
    ax.boxplot([tunings[n].r2.clamp(0, 1).numpy() for n in names], showfliers=True)
    ax.axhline(TUNED_R2, color="grey", ls="--", lw=0.8)
    ax.set_xticks(range(1, len(names) + 1), names, rotation=15, fontsize=8)
    ax.set_ylabel("R2 of orientation tuning (every unit of the layer)")
    ax.set_title("orientation tuning", fontsize=9)
    ax = axes[1][0]
    drawn, _ = drawable(rows, "e_minus_mean")
    _log_scatter(ax, drawn, "e_plus_mean", "e_minus_mean", size=18)
    note = _never_note(rows)
    if note:
        ax.text(0.02, -0.16, note, transform=ax.transAxes, fontsize=6, va="top", wrap=True)
    ax.set_xlabel("mean E+ over the images (per measured unit)")
    ax.set_ylabel("mean E-")
    ax.set_title("excitation and inhibition in data", fontsize=9)
    ax = axes[1][1]
    for k, s in enumerate(summaries):
        values = [v for v in s["search_over_data"] if v > 0]
        ax.scatter([k + 1] * len(values), values, s=22)
    ax.axhline(1, color="grey", ls="--", lw=0.8)
    if any(s["search_over_data"] for s in summaries):
        ax.set_yscale("log")
    ax.set_xticks(range(1, len(names) + 1), names, rotation=15, fontsize=8)
    ax.set_xlim(0.5, len(names) + 0.5)
    ax.set_ylabel("search tension / max data tension (per searched unit)")
    ax.set_title("MTI search over data", fontsize=9)
    return _save(fig, path)


def report_markdown(cfg: MTIConfig, header: str, findings: str, table: str) -> str:
    """``compare_report.md``: how to regenerate it, the findings, the figure, the table."""
    c = compare_group(cfg)
    models = [cfg.models] if isinstance(cfg.models, str) else list(cfg.models or [])
    return "\n".join(
        [
            "# Architecture comparison on the curves world",
            "",
            "Regenerate (trains the timm models, or reuses them from the trained cache; the",
            "other options at their defaults in conf/experiment/compare.yaml):",
            "",
            "```bash",
            f"mti experiment=compare 'models=[{','.join(models)}]' "
            f"compare.report_to={c.report_to or 'docs'}",
            "```",
            "",
            "```text",
            findings,
            "```",
            "",
            "![findings per architecture](compare_report.png)",
            "",
            "```text",
            header,
            "",
            table,
            "```",
            "",
        ]
    )


def write_report(
    cfg: MTIConfig,
    run_dir: Path,
    header: str,
    plans: list[Plan],
    rows: list[dict[str, Any]],
    data: dict[str, dict[str, torch.Tensor]],
    tunings: dict[str, Tuning],
    training: dict[str, dict[str, Any]],
    image_root: Path | None = None,
) -> None:
    """``compare.csv``, ``compare.txt`` (header, findings, table), ``compare_report.md``,
    figures, the W&B table with each unit's tensest data image (under ``image_root``) and MTI
    as image cells, the report's files as an artifact; copies of the report in
    ``compare.report_to`` when set."""
    summaries = [
        summarize(p, tunings[p.name], rows, data[p.name], training.get(p.name)) for p in plans
    ]
    findings = findings_text(summaries)
    write_csv(run_dir / "compare.csv", rows)
    table = text_table(rows, COLUMNS)
    write_text(run_dir / "compare.txt", f"{header}\n\n{findings}\n\n{table}\n")
    title = ", ".join(f"{p.name} {p.layer}" for p in plans)
    figures = [
        report_figure(run_dir / "compare_report.png", summaries, tunings, rows),
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
    report = write_text(
        run_dir / "compare_report.md", report_markdown(cfg, header, findings, table)
    )
    outputs = ["compare.csv", "compare.txt", report.name, *(f.name for f in figures), "data"]
    log_to_wandb(cfg, run_dir, "comparison", rows, figures, images=images, outputs=outputs)
    target = compare_group(cfg).report_to
    if target:
        Path(target).mkdir(parents=True, exist_ok=True)
        for path in (report, figures[0]):
            atomic_write(Path(target) / path.name, lambda tmp, p=path: shutil.copyfile(p, tmp))
    print(header)
    print(findings)
    print(table)
    print(f"mti: comparison in {run_dir} (compare.csv, compare.txt, compare_report.md, *.png)")
