"""Result tables of many units or runs: CSV file, aligned text, and a W&B table with figures.

Shared by the architecture comparison and the aggregation of sweeps, which both end in one
table of rows (dicts with the same keys) and a few figures.
"""

from __future__ import annotations

import csv
from collections.abc import Mapping, Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

from mti_lightning.core.config_schema import MTIConfig
from mti_lightning.core.io import atomic_write
from mti_lightning.shells.loggers import logger_from_config
from mti_lightning.shells.wandb_record import guarded, log_table, track_outputs


def write_csv(path: Path, rows: Sequence[dict[str, Any]]) -> Path:
    """Write ``rows`` as CSV (columns: the first row's keys), atomically."""

    def write(tmp: Path) -> None:
        with open(tmp, "w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=list(rows[0]))
            writer.writeheader()
            writer.writerows(rows)

    return atomic_write(path, write)


def _cell(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


def text_table(rows: Sequence[dict[str, Any]], columns: Sequence[str]) -> str:
    """``columns`` of ``rows`` as an aligned text table: text left, numbers right (4
    significant digits)."""
    cells = [[_cell(r.get(c)) for c in columns] for r in rows]
    widths = [max([len(c), *(len(row[i]) for row in cells)]) for i, c in enumerate(columns)]
    text = [all(isinstance(r.get(c), str) for r in rows) for c in columns]

    def line(values: Sequence[str]) -> str:
        parts = [v.ljust(w) if t else v.rjust(w) for v, w, t in zip(values, widths, text)]
        return "  ".join(parts).rstrip()

    head = line(columns)
    return "\n".join([head, "-" * len(head), *(line(row) for row in cells)])


def log_to_wandb(
    cfg: MTIConfig,
    run_dir: Path,
    key: str,
    rows: Sequence[dict[str, Any]],
    figures: Sequence[Path],
    images: Mapping[str, Sequence[Path | None]] | None = None,
    tables: Mapping[str, Sequence[dict[str, Any]]] | None = None,
    outputs: Sequence[str] = (),
) -> None:
    """Log ``rows`` as the W&B table ``key`` (``images``: extra columns of PNG files, one per
    row or None, shown as images), the other ``tables``, ``figures`` as images and the files
    ``outputs`` (relative to ``run_dir``) as a versioned artifact of type ``key``, when
    ``logger=wandb`` (offline without a server); nothing for the CSV logger or none. Call it
    once the run directory holds the results: a tracker failure costs a warning, not a run."""
    if cfg.logger.kind != "wandb":
        return
    logger = logger_from_config(cfg, run_dir)
    log_table(logger, key, rows, images or {})
    for name, table in (tables or {}).items():
        log_table(logger, name, table, {})
    for path in figures:  # one key each: W&B shows images of one key at one size
        name, files = f"{key}_{path.stem}", [str(path)]
        guarded(logger, name, lambda wb, k=name, f=files: wb.log_image(key=k, images=f), False)
    track_outputs(logger, run_dir, key, outputs, asdict(cfg))
