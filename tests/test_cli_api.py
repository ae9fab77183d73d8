"""The ``mti`` command and the Python API are one code path: the same config and seed give
the same images both ways; defaults follow the model; bad numbers and moved keys are one-line
errors before any work; the atlas takes ``model=`` and ``target=`` like the search."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from tolerances import NETWORK, assert_reordered

import mti_lightning as mti
from mti_lightning.core.errors import MTIConfigError
from mti_lightning.core.io import load_tensors
from mti_lightning.face.api_config import build_config, compose_config
from mti_lightning.journeys.atlas.face import atlas_config

MTI = str(Path(sys.executable).parent / "mti")


def run_mti(args: list[str], cwd: Path, timeout: float = 300) -> subprocess.CompletedProcess:
    env = dict(os.environ, WANDB_MODE="offline", PYTHONWARNINGS="ignore")
    env.pop("WANDB_API_KEY", None)
    return subprocess.run(
        [MTI, *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout
    )


TINY_CLI = [
    "model=resnet18",
    "model.input_size=[3,32,32]",
    "target=layer2.0.conv1:3@center",
    "search.steps=3",
    "search.draws=2",
    "search.inversions.steps=2",
    "search.inversions.draws=1",
    "checkpoint.every_n_steps=0",
    "callbacks.transparency=false",
    "logger=csv",
    "seed=7",
]


@pytest.mark.slow
def test_cli_and_api_give_identical_images(tmp_path):
    out = run_mti([*TINY_CLI, f"hydra.run.dir={tmp_path / 'cli'}"], cwd=tmp_path)
    assert out.returncode == 0, out.stderr[-3000:]
    result = mti.search(
        "resnet18",
        "layer2.0.conv1:3@center",
        steps=3,
        draws=2,
        input_size=[3, 32, 32],
        transparency=False,
        logger="csv",
        seed=7,
        run_dir=tmp_path / "api",
        **{"search.inversions.steps": 2, "search.inversions.draws": 1},
        **{"checkpoint.every_n_steps": 0},
    )
    cli = load_tensors(tmp_path / "cli" / "tensors.safetensors")
    # two processes run the same code on the same machine: equal up to float rounding (thread
    # scheduling may order a reduction differently), far below any difference a config makes
    assert_reordered(cli["images"], result.images, scale=1.0)
    assert_reordered(cli["plus"], result.inversions["plus"].float(), scale=1.0)
    assert_reordered(cli["minus"], result.inversions["minus"].float(), scale=1.0)
    record = json.loads((tmp_path / "cli" / "metrics.json").read_text())
    assert [r["feature"] for r in record["images"]] == result.features
    for got, want in zip(record["images"], result.rows):
        assert got.keys() == want.keys()
        for key, value in want.items():
            if isinstance(value, float):
                assert got[key] == pytest.approx(value, rel=NETWORK.rtol, abs=1e-5), key
            else:
                assert got[key] == value, key
    assert record["attribution_layer"] == result.record["attribution_layer"] == "layer2.0:in"


def test_a_timm_target_runs_with_the_default_attribution_layer(tmp_path):
    """``mti model=resnet18 target=layer3.0.bn1:1``: no CurveNet layer name leaks in."""
    args = ["model=resnet18", "target=layer3.0.bn1:1", "model.input_size=[3,32,32]"]
    args += ["search.steps=1", "search.draws=1", "search.inversions.steps=1", "logger=csv"]
    out = run_mti([*args, f"hydra.run.dir={tmp_path / 'run'}"], cwd=tmp_path)
    assert out.returncode == 0, out.stderr[-3000:]
    record = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert record["attribution_layer"] == "layer3.0:in"
    assert record["images"][0]["feature"] == "layer3.0.bn1:1@center"


@pytest.mark.parametrize(
    "override,message",
    [
        ("search.lr=nan", "search.lr=nan; must be a finite number > 0"),
        ("atlas.model=resnet18", "atlas.model is gone; use model="),
    ],
)
def test_bad_values_are_one_line_before_any_work(tmp_path, override, message):
    out = run_mti([override, "logger=csv", f"hydra.run.dir={tmp_path / 'run'}"], cwd=tmp_path)
    assert out.returncode == 2, out.stderr[-2000:]
    errors = [line for line in out.stderr.splitlines() if line.startswith("mti: error:")]
    assert len(errors) == 1 and message in errors[0], out.stderr[-2000:]
    assert not (tmp_path / "run" / "checkpoints").exists()


def test_atlas_takes_the_search_keys():
    cfg = compose_config(["experiment=atlas", "model=resnet18", "target=layer3.0.bn1:1"])
    cfg.model.input_size = [3, 32, 32]
    atlas = atlas_config(cfg)
    assert atlas.model == "resnet18" and atlas.feature == "layer3.0.bn1:1@center"
    assert atlas.input_size == [3, 32, 32] and atlas.layers == ["auto"]
    for key, use in (("model", "model="), ("feature", "target="), ("input_size", "model.")):
        with pytest.raises(MTIConfigError, match=f"atlas.{key} is gone; use {use}"):
            build_config(["experiment=atlas"], "resnet18", {f"atlas.{key}": 1}, "atlas")
    cfg.target = {"layer": "layer3.0.bn1", "channel": [1, 2], "position": "center"}
    with pytest.raises(MTIConfigError, match="target names 2 features"):
        atlas_config(cfg)


TINY_ATLAS = [
    "atlas.curves_n=24",
    "atlas.shard_size=12",
    "atlas.batch_size=12",
    "atlas.top_activation=8",
    "atlas.bottom_activation=8",
    "atlas.top_l1=8",
    "atlas.top_e_minus=8",
    "atlas.umap_n_neighbors=4",
    "atlas.umap_n_epochs=10",
    "atlas.grid=2",
    "atlas.min_images=2",
    "atlas.icon_steps=1",
    "atlas.icon_draws=1",
    "atlas.icon_canvas=32",
    "atlas.atlas_size=64",
    "atlas.viewer_thumbnails=2",
    "logger=csv",
]


@pytest.mark.slow
def test_atlas_runs_on_the_model_it_is_given(tmp_path):
    run = tmp_path / "atlas"
    args = ["experiment=atlas", "model=resnet18", "target=layer3.0.bn1:1@center"]
    args += ["model.input_size=[3,32,32]", *TINY_ATLAS, f"hydra.run.dir={run}"]
    out = run_mti(args, cwd=tmp_path)
    assert out.returncode == 0, out.stderr[-3000:]
    used = json.loads((run / "atlas_config.json").read_text())
    assert used["model"] == "resnet18" and used["feature"] == "layer3.0.bn1:1@center"
    assert used["layers"] == ["layer3.0:in"]
    assert (run / "atlas" / "atlas.png").is_file() and (run / "atlas" / "atlas.html").is_file()
    again = run_mti(args, cwd=tmp_path)  # resumes: every stage up to date
    assert again.returncode == 0 and again.stdout.count("skipped (up to date)") == 7


def test_atlas_api_on_a_dataset_object(tmp_path):
    from torchvision.datasets import FakeData

    data = FakeData(size=24, image_size=(3, 32, 32), num_classes=2, random_offset=3)
    options = {
        k.split("=")[0].removeprefix("atlas."): int(k.split("=")[1]) for k in TINY_ATLAS[:-1]
    }
    result = mti.atlas(
        "resnet18",
        "layer3.0.bn1:1@center",
        data=data,
        input_size=[3, 32, 32],
        logger="csv",
        run_dir=tmp_path / "a",
        **options,
    )
    assert result.stages["dataset_pass"]["n_images"] == 24 and result.n_failed == 0
    assert result.atlas_png.is_file() and result._repr_png_()[:4] == b"\x89PNG"
    assert "layer3.0.bn1:1@center" in result._repr_html_()
