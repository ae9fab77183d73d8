"""What a search found, as one record for ``metrics.json`` and W&B alike.

``run_facts`` says what was searched (model, trained or not, layer, its relative depth,
attribution layer, kind); ``summary_values`` flattens the per-unit figures and adds the
aggregates a sweep sorts by. ``track_search`` sends that same record to W&B (summary and
config), with the ``results`` table (a row per unit, its images as image cells) and the run's
outputs as a versioned artifact.

Summary keys (``UNIT`` is the feature, e.g. ``bn2:9@center``, repeats told apart as ``#1``):

- ``unit/UNIT/start_activation``, ``unit/UNIT/end_activation``; with energies (an attribution
  layer) also ``start_``/``end_`` ``e_plus``, ``e_minus``, ``tension``, ``tension_ratio``;
  with +/- inversions ``unit/UNIT/plus_activation`` and ``unit/UNIT/minus_activation``;
- ``summary/n_units``, ``summary/steps_run``, ``summary/mean_start_activation``,
  ``summary/mean_end_activation``; with energies ``summary/mean_end_tension``,
  ``summary/median_end_tension``, ``summary/max_end_tension``, ``summary/mean_start_tension``,
  ``summary/frac_tension_rose``, ``summary/mean_end_tension_ratio``,
  ``summary/mean_end_e_plus``, ``summary/mean_end_e_minus``; with inversions
  ``summary/mean_plus_activation``, ``summary/mean_minus_activation``.
"""

from __future__ import annotations

import statistics
from collections.abc import Mapping, Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

import torch

from mti_lightning.core.config_schema import MTIConfig
from mti_lightning.core.features import FeatureSpec
from mti_lightning.core.layer_choice import relative_depth, survey
from mti_lightning.core.models import LoadedModel
from mti_lightning.journeys.search.summary import row_box
from mti_lightning.shells.wandb_record import as_wandb, log_summary, log_table, track_outputs

UNIT_KEYS = ("activation", "e_plus", "e_minus", "tension", "tension_ratio")
OUTPUTS = (
    "images",
    "inversions",
    "transparency",
    "tensors.safetensors",
    "metrics.json",
    "summary.png",
    "summary.txt",
    "config.yaml",
)


def run_facts(
    kind: str, lm: LoadedModel, specs: Sequence[FeatureSpec], attribution_layer: str | None
) -> dict[str, Any]:
    """What was searched: the config a sweep groups and plots by."""
    layers = list(dict.fromkeys(sp.layer for sp in specs))
    depth = None
    if layers:
        try:
            depth = relative_depth(survey(lm.model, lm.input_size), layers[0])
        except Exception:  # noqa: BLE001 (a model the survey cannot probe has no depth)
            depth = None
    return {
        "kind": kind,
        "model": lm.name,
        "model_source": lm.source,
        "model_trained": lm.trained,
        "layer": ",".join(layers),
        "layer_depth": depth,
        "attribution_layer": attribution_layer,
    }


def _mean(values: list[float]) -> float | None:
    return sum(values) / len(values) if values else None


def summary_values(
    units: Sequence[str], rows: Sequence[Mapping[str, Any]], steps_run: int, energies: bool
) -> dict[str, Any]:
    """The flat summary of a search: per-unit figures under ``unit/UNIT/...`` and aggregates
    under ``summary/...`` (``energies``: the search measured E+/E- at an attribution layer)."""
    keys = UNIT_KEYS if energies else ("activation",)
    out: dict[str, Any] = {}
    for unit, row in zip(units, rows):
        for key in keys:
            for when in ("start", "end"):
                out[f"unit/{unit}/{when}_{key}"] = row.get(f"{when}_{key}")
        for key in ("plus_activation", "minus_activation"):
            if row.get(key) is not None:
                out[f"unit/{unit}/{key}"] = row[key]

    def col(key: str) -> list[float]:
        return [float(r[key]) for r in rows if r.get(key) is not None]

    out["summary/n_units"] = len(rows)
    out["summary/steps_run"] = steps_run
    out["summary/mean_start_activation"] = _mean(col("start_activation"))
    out["summary/mean_end_activation"] = _mean(col("end_activation"))
    if energies:
        end = col("end_tension")
        pairs = [
            (r["start_tension"], r["end_tension"])
            for r in rows
            if r.get("start_tension") is not None and r.get("end_tension") is not None
        ]
        out |= {
            "summary/mean_end_tension": _mean(end),
            "summary/median_end_tension": statistics.median(end) if end else None,
            "summary/max_end_tension": max(end) if end else None,
            "summary/mean_start_tension": _mean(col("start_tension")),
            "summary/frac_tension_rose": _mean([float(b > a) for a, b in pairs]),
            "summary/mean_end_tension_ratio": _mean(col("end_tension_ratio")),
            "summary/mean_end_e_plus": _mean(col("end_e_plus")),
            "summary/mean_end_e_minus": _mean(col("end_e_minus")),
        }
    for key in ("plus_activation", "minus_activation"):
        if col(key):
            out[f"summary/mean_{key}"] = _mean(col(key))
    return out


def track_search(
    logger: Any,
    cfg: MTIConfig,
    run_dir: Path,
    record: Mapping[str, Any],
    units: Sequence[str],
    images: torch.Tensor,
    inversions: Mapping[str, torch.Tensor] | None,
    alpha: torch.Tensor | None,
) -> None:
    """Send a search's record to W&B (a no-op for other loggers): ``record['summary']`` to
    the run's summary, ``record['run']`` to its config, the ``results`` table, and the run's
    outputs as the artifact ``search-RUN`` (a new version each time), then finish the run."""
    wb = as_wandb(logger)
    if wb is None:
        return
    log_summary(wb, record["summary"], {"run": record["run"]})
    rows = [
        {
            "index": k,
            "unit": u,
            **{c: v for c, v in r.items() if c not in ("image", "rf_effective")},
        }
        for k, (u, r) in enumerate(zip(units, record["images"]))
    ]
    pictures: dict[str, list[Any]] = {"image": list(images)}
    if inversions:
        pictures["plus_inversion"] = list(inversions["plus"])
        pictures["minus_inversion"] = list(inversions["minus"])
    if alpha is not None:
        pictures["transparency"] = [torch.cat([img, a[None]]) for img, a in zip(images, alpha)]
    boxes = [row_box(r) for r in record["images"]]
    if any(b is not None for b in boxes):  # the same cropped to each unit's receptive field
        for name in list(pictures):
            pictures[f"{name}_rf"] = [
                b.crop(img) if b is not None else None for b, img in zip(boxes, pictures[name])
            ]
    log_table(wb, "results", rows, pictures)
    aggregates = {k: v for k, v in record["summary"].items() if k.startswith("summary/")}
    metadata = {**record["run"], **aggregates}
    track_outputs(wb, run_dir, "search", OUTPUTS, asdict(cfg), metadata)
