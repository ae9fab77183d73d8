"""Aggregation of a sweep: the ``metrics.json`` of many run directories in one table and figure.

``aggregate.runs`` is a directory (a multirun's sweep directory, searched recursively) or a
glob of run directories / ``metrics.json`` files. Each unit of each run becomes one row, read
from the run's summary (the ``unit/UNIT/...`` values its W&B run holds; older runs: their
``images`` rows), with the Hydra overrides that differ between the runs
(``.hydra/overrides.yaml`` of each job) as the ``varied`` column, so the table says what the
sweep changed. Writes ``aggregate.csv``, ``aggregate_runs.csv`` (one row per run: its
``summary/...`` aggregates, layer and relative depth), ``aggregate.txt`` (highest end tension
first) and ``aggregate.png``; with ``logger=wandb`` also the W&B tables ``aggregate`` and
``aggregate_runs`` and the outputs as an artifact.
"""

from __future__ import annotations

import glob
import json
import os
from pathlib import Path
from typing import Any

from omegaconf import OmegaConf

from mti_lightning.core.config_schema import MTIConfig
from mti_lightning.core.errors import MTIConfigError
from mti_lightning.core.io import atomic_write, write_text
from mti_lightning.shells.tables import log_to_wandb, text_table, write_csv

COLUMNS = (
    "run",
    "varied",
    "feature",
    "start_activation",
    "end_activation",
    "end_e_plus",
    "end_e_minus",
    "start_tension",
    "end_tension",
    "end_tension_ratio",
)


def find_metrics(runs: str, exclude: Path | None = None) -> list[Path]:
    """Every ``metrics.json`` under the directory or glob ``runs`` (outside ``exclude``)."""
    matches = (
        [Path(runs)] if Path(runs).is_dir() else [Path(p) for p in glob.glob(runs, recursive=True)]
    )
    found: set[Path] = set()
    for m in matches:
        if m.is_dir():
            found.update(m.rglob("metrics.json"))
        elif m.name == "metrics.json":
            found.add(m)
    if exclude is not None:
        found = {p for p in found if exclude.resolve() not in p.resolve().parents}
    if not found:
        raise MTIConfigError(
            f"aggregate.runs={runs!r}: no run directory with a metrics.json there; give a sweep "
            "directory (multirun/DATE_TIME), a run directory, or a glob such as 'multirun/*/*'"
        )
    return sorted(found)


def _overrides(run: Path) -> dict[str, str]:
    path = run / ".hydra" / "overrides.yaml"
    if not path.is_file():
        return {}
    items = OmegaConf.to_container(OmegaConf.load(path)) or []
    return dict(item.split("=", 1) for item in items if "=" in item)


def units_of(record: dict[str, Any]) -> list[dict[str, Any]]:
    """One dict per unit of a run's ``metrics.json``: from its summary (``unit/UNIT/KEY``, the
    values its W&B run holds), or from its ``images`` rows for runs made before summaries."""
    summary = record.get("summary")
    if not summary:
        return [{k: image.get(k) for k in COLUMNS[2:]} for image in record["images"]]
    units: dict[str, dict[str, Any]] = {}
    for key, value in summary.items():
        if key.startswith("unit/"):
            unit, _, name = key[len("unit/") :].rpartition("/")
            units.setdefault(unit, {"feature": unit})[name] = value
    return [{k: u.get(k) for k in COLUMNS[2:]} for u in units.values()]


def gather(paths: list[Path]) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """One row per unit of every run, and one per run (its ``summary/...`` aggregates and
    what it searched), with the overrides that vary across the runs."""
    runs = [p.parent for p in paths]
    root = Path(os.path.commonpath([r.resolve() for r in runs]))
    overrides = [_overrides(r) for r in runs]
    keys = sorted({k for o in overrides for k in o})
    varied = [k for k in keys if len({o.get(k) for o in overrides}) > 1]
    rows, per_run = [], []
    for path, run, over in zip(paths, runs, overrides):
        record = json.loads(path.read_text())
        name = str(run.resolve().relative_to(root)) if run.resolve() != root else run.name
        facts = record.get("run") or {}
        common = {
            "run": name,
            "varied": " ".join(f"{k}={over[k]}" for k in varied if k in over),
            "model": record.get("model"),
            "kind": record.get("kind"),
            "steps_run": record.get("steps_run"),
        }
        rows += [{**common, **unit} for unit in units_of(record)]
        aggregates = {
            k.removeprefix("summary/"): v
            for k, v in (record.get("summary") or {}).items()
            if k.startswith("summary/")
        }
        per_run.append(
            {
                **common,
                "layer": facts.get("layer"),
                "layer_depth": facts.get("layer_depth"),
                "model_trained": facts.get("model_trained", record.get("model_trained")),
                **aggregates,
            }
        )
    return rows, per_run


def aggregate_figure(path: Path, rows: list[dict[str, Any]], top: int, title: str) -> Path:
    """Bar chart of the ``top`` end tensions and start-vs-end tension of every image."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    best = sorted(rows, key=lambda r: -(r["end_tension"] or 0.0))[:top]
    fig, (ax_b, ax_s) = plt.subplots(1, 2, figsize=(11, max(3.5, 0.22 * len(best) + 1.5)))
    labels = [f"{r['varied'] or r['run']}  {r['feature']}" for r in best]
    ax_b.barh(range(len(best)), [r["end_tension"] or 0.0 for r in best], color="tab:purple")
    ax_b.set_yticks(range(len(best)), labels, fontsize=6)
    ax_b.invert_yaxis()
    ax_b.set_xlabel("tension reached")
    for model in dict.fromkeys(r["model"] for r in rows):
        pts = [r for r in rows if r["model"] == model and r["start_tension"] is not None]
        ax_s.scatter(
            [r["start_tension"] for r in pts], [r["end_tension"] for r in pts], s=14, label=model
        )
    both = [v for r in rows for v in (r["start_tension"], r["end_tension"]) if v is not None]
    if both:
        ax_s.plot([min(both), max(both)], [min(both), max(both)], color="grey", lw=0.8, ls="--")
    ax_s.set_xlabel("tension at start")
    ax_s.set_ylabel("tension at end")
    ax_s.legend(fontsize=7)
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    atomic_write(path, lambda tmp: fig.savefig(tmp, format="png", dpi=110))
    plt.close(fig)
    return path


def run_aggregate(cfg: MTIConfig, run_dir: Path) -> list[dict[str, Any]]:
    """Gather ``cfg.aggregate.runs`` into ``run_dir``; return the rows."""
    a = cfg.aggregate
    if a is None:
        raise MTIConfigError("no aggregate group; compose the config with experiment=aggregate")
    run_dir = Path(run_dir)
    paths = find_metrics(str(a.runs), exclude=run_dir)
    rows, per_run = gather(paths)
    write_csv(run_dir / "aggregate.csv", rows)
    write_csv(run_dir / "aggregate_runs.csv", per_run)
    ranked = sorted(rows, key=lambda r: -(r["end_tension"] or 0.0))
    table = text_table(ranked, COLUMNS)
    header = f"{len(paths)} runs, {len(rows)} images from {a.runs}"
    write_text(run_dir / "aggregate.txt", f"{header}\n\n{table}\n")
    figure = aggregate_figure(run_dir / "aggregate.png", rows, a.top, header)
    log_to_wandb(
        cfg,
        run_dir,
        "aggregate",
        rows,
        [figure],
        tables={"aggregate_runs": per_run},
        outputs=["aggregate.csv", "aggregate_runs.csv", "aggregate.txt", "aggregate.png"],
    )
    print(header)
    print(table)
    print(
        f"mti: aggregate in {run_dir} (aggregate.csv, aggregate_runs.csv, aggregate.txt, "
        "aggregate.png)"
    )
    return rows
