"""The search journey: a search (MTI, feature visualisation, inversion or accentuation) from a
config, run by the engine floor's search runner (``shells/search_run.py``: the search and its
+/- inversions), and a run directory with everything it produced. The ``mti`` command and the
Python API (``mti_lightning.api``) both run searches through :func:`run_search`.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from mti_lightning.core.config_schema import MTIConfig
from mti_lightning.core.features import FeatureSpec
from mti_lightning.core.models import LoadedModel
from mti_lightning.core.receptive_field import receptive_fields
from mti_lightning.journeys.search.result import SearchResult
from mti_lightning.journeys.search.summary import summary_rows
from mti_lightning.journeys.search.tracking import run_facts, summary_values, track_search
from mti_lightning.shells.callbacks import SearchEndCallback
from mti_lightning.shells.search_run import CallbackFactory, SearchRun, prepare, run_stages

# ``prepare`` is the runner's, named here too for the tests and benchmarks that build a search
__all__ = ["prepare", "run_search", "run_search_job"]


def run_search(
    cfg: MTIConfig,
    run_dir: Path,
    lm: LoadedModel | None = None,
    logger: Any = None,
    extra: Mapping[str, CallbackFactory] | None = None,
) -> SearchResult | None:
    """Run the search described by ``cfg`` into ``run_dir`` and return what it found (None on
    the processes other than rank 0 of a DDP run). The ``mti`` command and the Python API both
    come here. ``lm``: an already loaded model; ``logger``: a Lightning logger to use instead
    of the one ``cfg.logger`` describes; ``extra``: callbacks the caller adds by name
    (``callbacks.atlas``'s placement), built once the features are known."""
    run = run_stages(cfg, Path(run_dir), lm, logger, extra)
    result = _write_results(cfg, Path(run_dir), run) if run.trainer.is_global_zero else None
    if run.trainer.world_size > 1:
        # the processes leave together: one that exits while rank 0 still writes can abort in
        # gloo's teardown ("terminate called without an active exception")
        run.trainer.strategy.barrier("search-written")
    return result


def run_search_job(cfg: MTIConfig, run_dir: Path) -> dict[str, Any]:
    """:func:`run_search`'s metrics record (empty on the processes other than rank 0)."""
    result = run_search(cfg, run_dir)
    return result.record if result is not None else {}


def field_columns(lm: LoadedModel, specs: list[FeatureSpec]) -> list[dict[str, Any]]:
    """Each image's receptive-field columns (``rf_*``: the field in px and the effective box
    the summary figure crops to); none for networks of input vectors or whole-canvas units."""
    if len(lm.input_size) != 3:
        return [{} for _ in specs]
    out = []
    for rf in receptive_fields(lm, specs):
        out.append(
            {}
            if rf.effective.whole
            else {
                "rf_effective_px": max(rf.effective.height, rf.effective.width),
                "rf_theoretical_px": max(rf.theoretical.height, rf.theoretical.width),
                "rf_effective": rf.effective.as_dict() | {"input": list(rf.effective.size)},
            }
        )
    return out


def _write_results(cfg: MTIConfig, run_dir: Path, run: SearchRun) -> SearchResult:
    prepared, trainer, inv = run.prepared, run.trainer, run.inversions
    search, cbs, kind = prepared.search, prepared.callbacks, prepared.kind.name
    start = search.measured.get("start", {})
    end = search.measured.get("end", {})
    rows = summary_rows(prepared.features, start, end, inv)
    per_image = search.measure_readout.specs if search.measure_readout is not None else []
    if len(per_image) == len(rows):
        rows = [r | c for r, c in zip(rows, field_columns(prepared.lm, per_image), strict=True)]
    for cb in cbs.values():  # e.g. atlas_* columns: where each image lies on its atlas
        if isinstance(cb, SearchEndCallback) and cb.columns():
            rows = [r | c for r, c in zip(rows, cb.columns())]
    images = run.images.float().cpu()
    alpha = cbs["transparency"].alpha if "transparency" in cbs else None
    record = {
        "kind": kind,
        "model": prepared.lm.source,
        "model_trained": prepared.lm.trained,
        "attribution_layer": search.metric_layer,
        "steps_run": trainer.global_step,
        "resumed_from": run.resumed_from,
        "nonfinite_step": cbs["guard"].bad_step,
        "stopped_at_target": getattr(cbs.get("stop"), "stopped_at", None),
        "world_size": trainer.world_size,
        "ddp_max_image_diff": run.agreement,
        "step_network": search.step_net.describe() if search.step_net else None,
        "images": rows,
        "run": run_facts(kind, prepared.lm, prepared.specs, search.metric_layer),
        "summary": summary_values(
            search.unit_names, rows, trainer.global_step, search.metric_layer is not None
        ),
    }
    title = f"{kind} on {prepared.lm.name} ({prepared.lm.source})"
    result = SearchResult(images, rows, record, title, inv, alpha, run_dir)
    result.save(run_dir)
    track_search(run.logger, cfg, run_dir, record, search.unit_names, images, inv, alpha)
    print(result.table())
    print(f"mti: run directory {run_dir}")
    return result
