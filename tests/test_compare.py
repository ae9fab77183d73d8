"""Layers by relative depth, automatic attribution layers, and the architecture comparison
(``mti experiment=compare``) on CurveNet and two tiny timm models, a CNN and a ViT."""

from __future__ import annotations

import csv
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import wandb_offline
from torch import nn

from mti_lightning.core.config_schema import MTIConfig
from mti_lightning.core.errors import MTIConfigError
from mti_lightning.core.layer_choice import (
    attribution_layer_for,
    layer_at_depth,
    position_for,
    survey,
)
from mti_lightning.core.models import load_model
from mti_lightning.face.api_config import compose_config

MTI = str(Path(sys.executable).parent / "mti")
TINY_COMPARE = [
    "experiment=compare",
    "models=[curvenet,test_resnet,test_vit]",
    "compare.units=3",
    "compare.n_images=6",
    "compare.search_units=2",
    "search.steps=3",
    "search.draws=2",
    "callbacks.transparency=false",
    "callbacks.snapshot_steps=[]",
    "checkpoint.every_n_steps=1000",
    "compare.tuning_images=64",
    "compare.train=false",  # random init unless a test trains (test_compare_trains_...)
]


def _compose(overrides: list[str]) -> MTIConfig:
    return compose_config(overrides)


@pytest.mark.parametrize(
    "name,depth,layer,attribution,position",
    [
        ("curvenet", 0.5, "act2:in", "act1", "center"),
        ("curvenet", 1.0, "act3:in", "act2", "center"),
        ("test_resnet", 0.5, "layer2.0.act2:in", "layer2.0:in", "center"),
        ("test_resnet", 0.75, "layer3.0.act3:in", "layer3.0:in", "center"),
        ("test_vit", 0.5, "blocks.2", "blocks.2:in", "cls"),
        ("test_vit", 1.0, "blocks.5", "blocks.5:in", "cls"),
    ],
)
def test_layer_by_relative_depth_and_its_attribution_layer(
    name, depth, layer, attribution, position
):
    lm = load_model(name)
    s = survey(lm.model, lm.input_size)
    assert layer_at_depth(s, depth, name) == layer
    assert attribution_layer_for(s, [layer], name) == attribution
    assert position_for(s, layer) == position


def test_auto_attribution_for_a_named_curvenet_layer():
    lm = load_model("curvenet")
    assert attribution_layer_for(survey(lm.model, lm.input_size), ["bn2"], "curvenet") == "act1"


def test_a_model_without_blocks_or_activations_is_a_clear_error():
    net = nn.Sequential(nn.Conv2d(3, 4, 3), nn.Conv2d(4, 4, 3)).eval()
    s = survey(net, (3, 16, 16))
    with pytest.raises(MTIConfigError, match="model plain: cannot choose layers by depth"):
        layer_at_depth(s, 0.5, "plain")
    with pytest.raises(MTIConfigError, match="model plain: cannot choose layers"):
        attribution_layer_for(s, ["1"], "plain")


@pytest.mark.parametrize(
    "overrides,layer,position,attribution",
    [
        (["model.name=test_vit"], "blocks.2", "cls", "blocks.2:in"),
        (
            ["model.name=test_resnet", "target.depth=1.0"],
            "layer4.0.act2:in",
            "center",
            "layer4.0:in",
        ),
        (["model=curvenet"], "act2:in", "center", "pool1"),  # CurveNet's own choice
    ],
    ids=["vit", "resnet", "curvenet"],
)
def test_search_with_depth_and_auto_attribution(tmp_path, overrides, layer, position, attribution):
    from mti_lightning.journeys.search.job import prepare

    prepared = prepare(_compose(["experiment=mti_depth", *overrides]), tmp_path)
    assert {(s.layer, s.position) for s in prepared.specs} == {(layer, position)}
    assert [s.channel for s in prepared.specs] == [0, 1, 2, 3]
    assert prepared.search.objective.layer == attribution
    assert prepared.search.metric_layer == attribution


SEARCH_BAD = [
    (["target.depth=1.5"], "depth=1.5 outside (0, 1]"),
    (["target.depth=0"], "depth=0 outside (0, 1]"),
    (["target.layer=bn2"], "target has both layer='bn2' and depth=0.5"),
    (["model=curvenet", "target.depth=0.25"], "no block lies upstream of target 'act1:in'"),
]


@pytest.mark.parametrize("override,message", SEARCH_BAD, ids=[b[1][:20] for b in SEARCH_BAD])
def test_bad_depth_in_a_search(tmp_path, override, message):
    from mti_lightning.journeys.search.job import prepare

    with pytest.raises(MTIConfigError, match=re.escape(message)):
        prepare(_compose(["experiment=mti_depth", *override]), tmp_path)


COMPARE_BAD = [
    (["models=[curvenet,resnet_nope]"], "unknown model 'resnet_nope' in models"),
    (["layers=1.5"], "depth=1.5 outside (0, 1]"),
    (["layers={curvenet:bn9,default:0.5}"], "layers for model curvenet: unknown layer 'bn9'"),
    (["layers={curvenet:bn2}"], "layers has no entry for model 'test_resnet' and no default"),
    (["layers={resnet50:0.5,default:0.5}"], "layers has entries for ['resnet50']"),
    (["compare.units=[0,400]"], "units [400] out of range for model curvenet layer act2:in"),
    (["compare.units=0"], "compare.units=0; need at least 1"),
    (["compare.tuning_images=3"], "compare.tuning_images=3; need at least 8"),
    (["compare.recipes={resnet50:{epochs:2}}"], "compare.recipes has entries for ['resnet50']"),
    (
        ["compare.train=true", "compare.recipes={test_resnet:{epoch:2}}"],
        "compare.recipes.test_resnet: unknown recipe keys ['epoch']",
    ),
]


@pytest.mark.parametrize("override,message", COMPARE_BAD, ids=[b[1][:24] for b in COMPARE_BAD])
def test_bad_compare_input_is_a_clear_error_before_any_work(tmp_path, override, message):
    from mti_lightning.journeys.compare.run import run_compare
    from mti_lightning.journeys.search.job import run_search_job

    with pytest.raises(MTIConfigError, match=re.escape(message)):
        run_compare(_compose([*TINY_COMPARE, "logger=csv", *override]), tmp_path, run_search_job)
    assert not any(tmp_path.iterdir())


def test_compare_measures_the_same_random_init_weights_its_search_loads(tmp_path):
    from mti_lightning.journeys.compare.run import plan_model
    from mti_lightning.journeys.search.job import prepare

    cfg = _compose([*TINY_COMPARE, "logger=csv"])
    plan = plan_model("test_resnet", cfg, ["test_resnet"])
    torch.manual_seed(123)  # whatever ran before: run_search_job seeds before loading
    sub = _compose(["experiment=mti_depth", "model.name=test_resnet", "search.steps=1"])
    torch.manual_seed(sub.seed)
    searched = prepare(sub, tmp_path).lm.model.state_dict()
    for key, value in plan.lm.model.state_dict().items():
        assert torch.equal(value, searched[key]), key


def test_compare_stages_resume_from_the_run_directory(tmp_path):
    from mti_lightning.journeys.compare.run import run_compare
    from mti_lightning.journeys.search.job import run_search_job

    cfg = _compose([*TINY_COMPARE, "models=[curvenet]", "logger=csv", "compare.n_images=3"])
    first = run_compare(cfg, tmp_path, run_search_job)
    metrics = tmp_path / "searches" / "curvenet" / "metrics.json"
    stamps = {p: p.stat().st_mtime_ns for p in [*(tmp_path / "data").iterdir(), metrics]}
    again = run_compare(cfg, tmp_path, run_search_job)
    assert again == first
    assert all(p.stat().st_mtime_ns == t for p, t in stamps.items())


@pytest.mark.slow
def test_compare_end_to_end_curvenet_a_cnn_and_a_vit(tmp_path):
    env = dict(os.environ, WANDB_MODE="offline", PYTHONWARNINGS="ignore", HF_HUB_OFFLINE="1")
    env.pop("WANDB_API_KEY", None)
    args = [*TINY_COMPARE, "model.pretrained=true", "logger=wandb", "hydra.run.dir=cmp"]
    out = subprocess.run(
        [MTI, *args], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600
    )
    assert out.returncode == 0, out.stderr[-3000:]
    run = tmp_path / "cmp"
    with open(run / "compare.csv") as f:
        rows = list(csv.DictReader(f))
    assert [r["model"] for r in rows] == ["curvenet"] * 3 + ["test_resnet"] * 3 + ["test_vit"] * 3
    assert {r["layer"] for r in rows} == {"act2:in", "layer2.0.act2:in", "blocks.2"}
    for model in ("curvenet", "test_resnet", "test_vit"):
        mine = [r for r in rows if r["model"] == model]
        assert [bool(r["search_tension"]) for r in mine] == [True, True, False]
        for r in mine:
            assert 0 <= float(r["ratio_mean"]) <= 1
            assert float(r["tension_max"]) >= float(r["tension_mean"]) >= 0
            assert int(r["n_images"]) == 6
    header = (run / "compare.txt").read_text().split("\n\n")[0]
    assert "6 synthetic curve images" in header
    assert "test_resnet: timm:test_resnet:random-init; pretrained weights unreachable" in header
    assert "UNTRAINED (random init): test_resnet, test_vit" in header
    assert "curvenet: builtin:curvenet; trained" in header
    for name in ("tension_by_model.png", "data_vs_search.png"):
        assert (run / name).stat().st_size > 0
    for model in ("curvenet", "test_resnet", "test_vit"):
        record = json.loads((run / "searches" / model / "metrics.json").read_text())
        assert record["steps_run"] == 3 and len(record["images"]) == 2
    tables = list(run.glob("wandb/offline-run-*/files/media/table/comparison_*.table.json"))
    assert len(tables) == 1
    table = json.loads(tables[0].read_text())
    assert table["columns"][:3] == ["model", "weights", "layer"] and len(table["data"]) == 9
    # the table with its images (held by the run's table artifact) and the report's artifact
    artifacts = wandb_offline.artifacts(run)
    (cells,) = [a for a in artifacts if a.name.endswith("-comparison")]
    files = {c.path: c.local_path for c in cells.manifest.contents}
    table = json.loads(Path(files["comparison.table.json"]).read_text())
    columns = table["columns"]
    assert len(columns) == len(set(columns)) and columns[-2:] == ["data_image", "mti_image"]
    for row, r in zip(table["data"], rows):
        assert row[-2]["_type"] == "image-file" and row[-2]["path"] in files
        searched = bool(r["search_tension"])
        assert (row[-1] is not None and row[-1]["_type"] == "image-file") == searched
    (report,) = [a for a in artifacts if a.type == "comparison"]
    names = {c.path for c in report.manifest.contents}
    assert {"compare.csv", "compare.txt", "compare_report.md", "tension_by_model.png"} <= names


TINY_RECIPE = {
    "max_steps": 3,
    "train_size": 128,
    "val_size": 32,
    "test_size": 32,
    "epochs": 1,
    "batch_size": 32,
    "num_workers": 0,
}


@pytest.mark.slow
def test_compare_trains_two_tiny_models_and_writes_the_report(tmp_path):
    """Offline: both timm models are trained on the curves world (into the cache), marked
    trained, and the findings report is written and copied to compare.report_to."""
    from mti_lightning.journeys.compare.run import run_compare
    from mti_lightning.journeys.search.job import run_search_job
    from mti_lightning.world.recipes import recipe_for
    from mti_lightning.world.train_cache import cached_record

    tiny = "{" + ",".join(f"{k}:{v}" for k, v in TINY_RECIPE.items()) + "}"
    recipes = f"compare.recipes={{test_resnet:{tiny},test_vit:{tiny}}}"
    cache, docs = tmp_path / "cache", tmp_path / "docs"
    overrides = [
        *TINY_COMPARE,
        "models=[test_resnet,test_vit]",
        "logger=csv",
        "compare.train=true",
        recipes,
        f"compare.cache_dir={cache}",
        f"compare.report_to={docs}",
    ]
    rows = run_compare(_compose(overrides), tmp_path / "run", run_search_job)
    assert [r["model"] for r in rows] == ["test_resnet"] * 3 + ["test_vit"] * 3
    assert all(r["weights"].startswith("trained on curves") for r in rows)
    for r in rows:
        assert 0 <= r["r2"] <= 1 and 0 <= r["inhibition_offset_deg"] <= 90
    text = (tmp_path / "run" / "compare.txt").read_text()
    assert "UNTRAINED" not in text
    assert re.search(r"- test_resnet layer2\.0\.act2:in: \d+ of 48 units tuned", text)
    assert re.search(r"- test_vit blocks\.2: \d+ of 64 units tuned", text)
    assert re.search(r"- test_vit: [\d.]+% held-out accuracy, trained in \d+ s", text)
    assert "UNDERTRAINED (below 90%)" in text  # three steps do not learn the task
    for name in ("compare_report.md", "compare_report.png"):
        assert (docs / name).read_bytes() == (tmp_path / "run" / name).read_bytes()
    for name in ("test_resnet", "test_vit"):
        recipe = recipe_for(name, TINY_RECIPE)
        record = cached_record(recipe, cache)
        assert record is not None and record["result"]["steps"] == 3


def test_never_tense_units_are_listed_not_drawn(tmp_path):
    from mti_lightning.journeys.compare.findings import finding_line
    from mti_lightning.journeys.compare.report import drawable, search_figure

    def row(unit: int, t_max: float, searched: float | None) -> dict:
        return {"model": "m", "unit": unit, "tension_max": t_max, "search_tension": searched}

    rows = [row(0, 0.0, 0.0), row(1, 0.5, 0.7), row(2, 0.0, None), row(3, 0.2, 0.0)]
    drawn, listed = drawable(rows, "search_tension")
    assert [r["unit"] for r in drawn] == [1]
    assert [r["unit"] for r in listed] == [0, 3]
    assert search_figure(tmp_path / "s.png", rows, "t").stat().st_size > 0
    summary = {
        "model": "m",
        "layer": "l",
        "tuned": 0,
        "channels": 4,
        "offsets": {},
        "measured": 4,
        "e_plus": 1.0,
        "e_minus": 0.0,
        "tension": 0.0,
        "ratio": 0.0,
        "never_tense": [0, 2],
        "searched": 0,
    }
    assert "2 never tense (units 0, 2)" in finding_line(summary)
