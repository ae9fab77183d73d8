"""What a search leaves in W&B and the CSV logger: per-unit curves during the search, and at
its end a summary equal to ``metrics.json``, a results table with image cells, and the run's
outputs as an artifact. Real offline W&B runs (a run directory ``wandb sync`` uploads), read
back in process and from the run file."""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Any

import pytest
import torch
import wandb_offline

from mti_lightning.core.config_schema import MTIConfig
from mti_lightning.core.errors import MTIConfigError
from mti_lightning.core.objectives import Evaluation
from mti_lightning.face.api_config import compose_config
from mti_lightning.journeys.search.job import prepare, run_search_job

UNITS = ["bn2:9@center", "bn2:12@center"]
QUANTITIES = ("activation", "e_plus", "e_minus", "tension", "tension_ratio")
TINY = [
    "model=curvenet",
    "target.channel=[9,12]",
    "search.steps=8",
    "search.draws=2",
    "search.inversions.steps=3",
    "search.inversions.draws=2",
    "trainer.log_every_n_steps=2",
    "callbacks.snapshot_steps=[]",
    "checkpoint.every_n_steps=1000",
]


def config(*overrides: str) -> MTIConfig:
    return compose_config([*TINY, *overrides])


@pytest.fixture(scope="module")
def wandb_run(tmp_path_factory) -> tuple[Path, dict, dict]:
    """A 2-unit search logged to W&B offline; its run dir, record and the in-process summary
    (taken as the run finishes: a finished run's summary can no longer be read)."""
    import wandb

    mp = pytest.MonkeyPatch()
    mp.setenv("WANDB_MODE", "offline")
    mp.setenv("WANDB_SILENT", "true")
    mp.delenv("WANDB_API_KEY", raising=False)
    seen: dict[str, Any] = {}
    real_finish = wandb.Run.finish

    def finish(run, *args, **kwargs):
        seen.update(dict(run.summary))
        return real_finish(run, *args, **kwargs)

    mp.setattr(wandb.Run, "finish", finish)
    run_dir = tmp_path_factory.mktemp("wandb") / "run"
    try:
        record = run_search_job(config("logger=wandb"), run_dir)
    finally:
        mp.undo()
    return run_dir, record, seen


@pytest.fixture(scope="module")
def csv_run(tmp_path_factory) -> tuple[Path, dict]:
    run_dir = tmp_path_factory.mktemp("csv") / "run"
    return run_dir, run_search_job(config("logger=csv"), run_dir)


@pytest.mark.slow
def test_summary_holds_per_unit_and_aggregate_keys_equal_to_metrics_json(wandb_run):
    run_dir, record, in_process = wandb_run
    saved = json.loads((run_dir / "metrics.json").read_text())
    assert saved["summary"] == record["summary"]
    keys = [f"unit/{u}/{w}_{q}" for u in UNITS for w in ("start", "end") for q in QUANTITIES]
    keys += [f"unit/{u}/{k}" for u in UNITS for k in ("plus_activation", "minus_activation")]
    aggregates = [
        "summary/mean_end_tension",
        "summary/median_end_tension",
        "summary/max_end_tension",
        "summary/frac_tension_rose",
        "summary/mean_end_tension_ratio",
    ]
    assert set(keys + aggregates) <= set(saved["summary"])
    rows = saved["images"]
    assert saved["summary"]["unit/bn2:12@center/end_tension"] == rows[1]["end_tension"]
    ends = [r["end_tension"] for r in rows]
    assert saved["summary"]["summary/max_end_tension"] == pytest.approx(max(ends))
    assert saved["summary"]["summary/mean_end_tension"] == pytest.approx(sum(ends) / 2)
    synced = wandb_offline.summary(run_dir)
    for key, value in saved["summary"].items():
        assert in_process[key] == pytest.approx(value), key
        assert synced[key] == pytest.approx(value), key
    facts = wandb_offline.config(run_dir)["run"]
    assert facts == saved["run"]
    assert facts["model"] == "curvenet" and facts["model_trained"] is True
    assert facts["layer"] == "bn2" and facts["attribution_layer"] == "pool1"
    assert facts["layer_depth"] == pytest.approx(2 / 3) and facts["kind"] == "mti"


def _staged(artifact: Any) -> dict[str, str]:
    return {c.path: c.local_path for c in artifact.manifest.contents}


@pytest.mark.slow
def test_results_table_has_unique_columns_and_image_cells(wandb_run):
    run_dir, _, _ = wandb_run
    (table_artifact,) = [a for a in wandb_offline.artifacts(run_dir) if a.name.endswith("-results")]
    files = _staged(table_artifact)
    table = json.loads(Path(files["results.table.json"]).read_text())
    columns = table["columns"]
    assert len(columns) == len(set(columns))
    full = ("image", "plus_inversion", "minus_inversion", "transparency")
    # centre units: each picture again, cropped to the unit's effective receptive field
    pictures = (*full, *(f"{name}_rf" for name in full))
    assert set(pictures) <= set(columns) and "end_tension" in columns
    assert "rf_effective_px" in columns and "rf_effective" not in columns
    assert [row[columns.index("unit")] for row in table["data"]] == UNITS
    for row in table["data"]:
        for name in pictures:
            cell = row[columns.index(name)]
            assert cell["_type"] == "image-file" and cell["path"] in files, (name, cell)
    rgba = [row[columns.index("transparency")] for row in table["data"]]
    assert all(c["format"] == "png" for c in rgba)


@pytest.mark.slow
def test_outputs_are_a_versioned_artifact_and_no_chart_tables_are_logged(wandb_run):
    run_dir, _, _ = wandb_run
    artifacts = wandb_offline.artifacts(run_dir)
    (outputs,) = [a for a in artifacts if a.type == "search"]
    assert outputs.name == "search-" + "-".join(run_dir.resolve().parts[-2:])
    files = _staged(outputs)
    for name in ("metrics.json", "tensors.safetensors", "config.json", "images/image_001.png"):
        assert name in files, name
    assert "inversions/minus_001.png" in files and "transparency/image_000.png" in files
    metadata = json.loads(outputs.metadata)
    assert metadata["summary/n_units"] == 2 and metadata["layer"] == "bn2"
    # the per-unit curves are plain history keys (QUANTITY/UNIT), no chart tables (logging a
    # table online asks W&B's public API): the run's one table is `results`
    tables = [a.name for a in artifacts if a.type == "run_table"]
    assert len(tables) == 1 and tables[0].endswith("-results"), tables
    history = {k for k in wandb_offline.summary(run_dir) if "/" in k and "@" in k}
    assert {f"{q}/{u}" for q in QUANTITIES for u in UNITS} <= history


@pytest.mark.slow
def test_csv_logger_holds_per_unit_curves_and_tension_rises(csv_run):
    run_dir, record = csv_run
    with open(run_dir / "csv" / "metrics.csv") as f:
        rows = list(csv.DictReader(f))
    assert [int(r["step"]) for r in rows] == [1, 3, 5, 7]
    for unit in UNITS:
        for q in QUANTITIES:
            assert all(r[f"{q}/{unit}"] != "" for r in rows), (q, unit)
        curve = [float(r[f"tension/{unit}"]) for r in rows]
        assert curve[-1] > curve[0], (unit, curve)
    for row in record["images"]:
        assert row["end_tension"] > row["start_tension"]
    assert record["summary"]["summary/frac_tension_rose"] == 1.0


def test_max_unit_curves_caps_the_curves_and_rejects_bad_values(tmp_path):
    search = prepare(config("logger=csv", "logger.max_unit_curves=1"), tmp_path).search
    assert search.unit_names == UNITS
    search.last_values = torch.tensor([0.5, -0.5])
    ev = Evaluation({}, torch.zeros(2, 3), torch.zeros(2, 3, 8, 8), {"tension": torch.ones(2)})
    assert set(search.unit_curves(ev)) == {f"activation/{UNITS[0]}", f"tension/{UNITS[0]}"}
    with pytest.raises(MTIConfigError, match=r"logger.max_unit_curves=-1; need a whole number"):
        prepare(config("logger=csv", "logger.max_unit_curves=-1"), tmp_path)
