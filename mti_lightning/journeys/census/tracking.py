"""What the census leaves in W&B: the ``census`` table (a row per unit with its numbers and
images), the ``census_layers`` table and a per-layer summary, the by-depth figure, and the site
(with units.json and search.json) as a versioned artifact. Everything goes through the engine's
W&B helpers (``shells/wandb_record.py``), so a run without a W&B logger logs nothing and a
tracker that fails costs a warning, never the census."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from mti_lightning.journeys.census.layout import (
    SEARCH_JSON,
    read_optional,
    read_units,
    unit_slug,
)
from mti_lightning.journeys.census.site import SITE_OUTPUTS
from mti_lightning.shells.wandb_record import (
    as_wandb,
    guarded,
    log_outputs,
    log_summary,
    log_table,
    run_label,
)

# the numbers of a unit's row in the table: units.json's, then search.json's
DATA_COLUMNS = (
    "rank", "spec", "layer", "unit", "attr_layer", "tension_mean", "tension_p50", "tension_p90",
    "tension_p99", "ratio_mean", "frac_tense", "e_plus_mean", "e_minus_mean", "act_mean",
)  # fmt: skip
SEARCH_COLUMNS = ("end_tension", "end_ratio", "end_activation", "search_over_data")
# image columns: search.json's image keys, the same cropped to the unit's effective receptive
# field (``<key>_rf``, columns without a crop are dropped), then the site's scatter
IMAGE_COLUMNS = ("viz_plus", "viz_minus", "mti", "mti_plus", "mti_minus", "data", "data_plus",
                 "data_minus")  # fmt: skip


def census_rows(census_dir: Path) -> tuple[list[dict[str, Any]], dict[str, list[Any]]]:
    """The table's rows (one per unit, in rank order) and its image columns (a path or None
    per row)."""
    census = Path(census_dir)
    units = read_units(census)
    search = read_optional(census, SEARCH_JSON).get("units", {})
    crop_columns = tuple(f"{k}_rf" for k in IMAGE_COLUMNS)
    rows, images = [], {k: [] for k in (*IMAGE_COLUMNS, *crop_columns, "scatter")}
    for row in sorted(units["units"], key=lambda r: r["rank"]):
        found = search.get(row["spec"]) or {}
        rf = found.get("receptive_field") or {}
        rows.append(
            {k: row.get(k) for k in DATA_COLUMNS}
            | {k: found.get(k) for k in SEARCH_COLUMNS}
            | {
                "rf_effective_px": rf.get("effective_px"),
                "rf_theoretical_px": rf.get("theoretical_px"),
            }
        )
        pictures = found.get("images", {})
        crops = {f"{k}_rf": v for k, v in found.get("crops", {}).items()}
        for key, named in [
            *((k, pictures) for k in IMAGE_COLUMNS),
            *((k, crops) for k in crop_columns),
        ]:
            path = census / named[key] if key in named else None
            images[key].append(str(path) if path and path.is_file() else None)
        scatter = census / "site" / unit_slug(row["spec"]) / "scatter.png"
        images["scatter"].append(str(scatter) if scatter.is_file() else None)
    return rows, images


def layer_rows(census_dir: Path) -> list[dict[str, Any]]:
    """Per layer of units.json: its depth, unit count, mean and largest tension, mean ratio and
    fraction tense over its units, and its tensest unit."""
    units = read_units(Path(census_dir))
    out = []
    for layer in units.get("layers", []):
        rows = [r for r in units["units"] if r["layer"] == layer["name"]]
        if not rows:
            continue
        tensest = min(rows, key=lambda r: r["rank"])
        out.append(
            {
                "layer": layer["name"],
                "depth": layer.get("depth"),
                "n_units": len(rows),
                "tension_mean": sum(r["tension_mean"] for r in rows) / len(rows),
                "tension_max": max(r["tension_mean"] for r in rows),
                "ratio_mean": sum(r["ratio_mean"] for r in rows) / len(rows),
                "frac_tense": sum(r["frac_tense"] for r in rows) / len(rows),
                "tensest_unit": tensest["spec"],
            }
        )
    return out


def log_census(census_dir: Path, logger: Any) -> None:
    """Log the census of ``census_dir`` (its site built first, so the scatters exist) to the
    run of ``logger``; nothing without a W&B logger. The caller finishes the run."""
    if as_wandb(logger) is None:
        return
    census = Path(census_dir)
    units = read_units(census)
    rows, images = census_rows(census)
    images = {k: v for k, v in images.items() if any(p is not None for p in v)}
    log_table(logger, "census", rows, images)
    layers = layer_rows(census)
    log_table(logger, "census_layers", layers, {})
    summary = {
        f"census/{r['layer']}/{k}": r[k]
        for r in layers
        for k in ("tension_mean", "tension_max", "ratio_mean", "frac_tense")
    }
    if rows:
        summary |= {"census/n_units": len(rows), "census/tensest_unit": rows[0]["spec"]}
    config = {"census_model": units.get("model"), "census_data": units.get("data")}
    log_summary(logger, summary, config)
    depth = census / "depth.png"
    if depth.is_file():
        guarded(
            logger,
            "census_depth",
            lambda wb: wb.log_image(key="census_depth", images=[str(depth)]),
            needs_server=False,
        )
    outputs = (*SITE_OUTPUTS, "units.json", SEARCH_JSON, "circuits.json")
    log_outputs(logger, census, f"census-{run_label(census)}", "census", outputs)
