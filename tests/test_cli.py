"""The ``mti`` command as users run it: installed console script, any working directory, a
run directory with everything in it, clear one-line errors, resume after a kill, and DDP."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from tolerances import TRAJECTORY, assert_reordered

from mti_lightning.core.config_schema import MTIConfig
from mti_lightning.core.io import load_tensors, save_png

MTI = str(Path(sys.executable).parent / "mti")
TINY = [
    "model=resnet18",
    "model.input_size=[3,32,32]",
    "target=layer2.0.conv1:3@center",
    "search.attribution_layer=layer1.1.act2",
    "search.draws=4",
    "search.inversions.steps=5",
    "logger=csv",
]


def mti(args: list[str], cwd: Path, timeout: float = 300) -> subprocess.CompletedProcess:
    env = dict(os.environ, WANDB_MODE="offline", PYTHONWARNINGS="ignore")
    env.pop("WANDB_API_KEY", None)
    return subprocess.run(
        [MTI, *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout
    )


def test_search_run_directory_from_another_working_directory(tmp_path):
    out = mti([*TINY, "search.steps=6", "logger=wandb"], cwd=tmp_path)
    assert out.returncode == 0, out.stderr[-3000:]
    runs = list((tmp_path / "outputs").glob("*/*"))
    assert len(runs) == 1
    run = runs[0]
    for name in (
        "config.yaml",
        "metrics.json",
        "summary.png",
        "summary.txt",
        "tensors.safetensors",
    ):
        assert (run / name).is_file(), name
    assert (run / "images" / "image_000.png").is_file()
    assert (run / "inversions" / "plus_000.png").is_file()
    assert (run / "transparency" / "image_000.png").is_file()
    wandb_runs = list((run / "wandb").glob("offline-run-*"))
    assert len(wandb_runs) == 1 and list(wandb_runs[0].glob("run-*.wandb"))
    record = json.loads((run / "metrics.json").read_text())
    assert record["steps_run"] == 6 and record["model_trained"] is False
    assert record["step_network"]["batchnorms_folded"] > 0
    assert record["step_network"]["channels_last"] and record["step_network"]["note"] == ""
    row = record["images"][0]
    assert row["feature"] == "layer2.0.conv1:3@center"
    assert row["end_tension"] > row["start_tension"]
    assert "layer2.0.conv1:3@center" in out.stdout and "mti: run directory" in out.stdout
    tensors = load_tensors(run / "tensors.safetensors")
    assert tensors["images"].shape == (1, 3, 32, 32) and tensors["plus"].shape == (1, 3, 32, 32)


def test_the_quick_starts_console_holds_no_advert_or_stale_warning(tmp_path):
    """``mti`` as the quick start runs it (W&B logger, offline), shortened: Lightning's
    litlogger tip and W&B's anonymous-setting warning are gone, the run's own output stays."""
    env = dict(os.environ, WANDB_MODE="offline")
    env.pop("WANDB_API_KEY", None)
    env.pop("PYTHONWARNINGS", None)
    args = ["search.steps=2", "search.draws=2", "search.inversions.steps=1"]
    out = subprocess.run(
        [MTI, *args, "target.channel=[19]"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert out.returncode == 0, out.stderr[-3000:]
    console = out.stdout + out.stderr
    assert "litlogger" not in console and "Tip:" not in console
    assert "anonymous setting" not in console
    assert "bn2:19@center" in out.stdout and "mti: run directory" in out.stdout
    (run,) = (tmp_path / "outputs").glob("*/*")
    assert list((run / "wandb").glob("offline-run-*"))


BAD = [
    (["model.name=resnet_nope"], "unknown model 'resnet_nope'"),
    (["target=layer9.0.conv1:3@center"], "unknown layer 'layer9.0.conv1'"),
    (["target=layer2.0.conv1:999@center"], "channel 999 out of range"),
    (["target='layer2.0.conv1:3@(40,1)'"], "position (40, 1) out of range"),
    (["search.attribution_layer=layer3.0.conv1"], "does not lie upstream"),
    (["trainer.precision=16-mixed"], "precision=16-mixed needs a GPU"),
    (["search=invert", "search.image=/nonexistent/x.png"], "image file not found"),
    (["search.kind=dream"], "search.kind 'dream'"),
    (["search.steps=0"], "search.steps=0"),
    (["search.optimizer=lbfgs"], "unknown optimizer 'lbfgs'"),
    (["trainer.fast_net=maybe"], "trainer.fast_net='maybe'; must be true or false"),
]


def _compose(overrides: list[str]) -> MTIConfig:
    """The config as the command composes it (bad keys and values fail here, checked once)."""
    from mti_lightning.face.api_config import compose_config

    return compose_config(overrides)


@pytest.mark.parametrize("override,message", BAD, ids=[b[1][:24] for b in BAD])
def test_bad_input_is_a_clear_error_before_any_step(tmp_path, override, message):
    from mti_lightning.core.errors import MTIConfigError
    from mti_lightning.journeys.search.job import prepare

    with pytest.raises(MTIConfigError, match=re.escape(message)):
        prepare(_compose([*TINY, *override]), tmp_path)
    assert not any(tmp_path.iterdir())


@pytest.mark.parametrize("override,message", [BAD[0], BAD[3]], ids=["model", "position"])
def test_bad_input_on_the_command_line_one_line_exit_2(tmp_path, override, message):
    out = mti([*TINY, "search.steps=2", *override], cwd=tmp_path, timeout=120)
    assert out.returncode == 2, out.stderr[-2000:]
    errors = [line for line in out.stderr.splitlines() if line.startswith("mti: error:")]
    assert len(errors) == 1 and message in errors[0], out.stderr[-2000:]
    assert not list(tmp_path.glob("outputs/*/*/checkpoints"))


# what a new user tries first: each ends in one line naming the key, the value and what
# would be valid (or the closest key), exit code 2, before any work
NEW_USER = [
    (["trainer.devices=0"], "trainer.devices=0; valid: a count >= 1, -1 (every device), auto"),
    (["hydra.run.dir=/proc/x"], "hydra.run.dir=/proc/x: cannot make the run directory"),
    (["trainer.max_steps=abc"], "trainer.max_steps=abc: unknown key; closest: train.max_steps"),
    (["logger=neptune"], "logger=neptune: no such logger config; valid: csv, wandb"),
    (["search.steps=abc"], "search.steps='abc'; must be an integer >= 1"),
    (["experiment=atlas", "atlas.grid=0"], "atlas.grid=0; must be an integer >= 1"),
    (["experiment=census", "census.layers=[1.5]"], "census.layers: depth 1.5 outside (0, 1]"),
]


@pytest.mark.parametrize("args,message", NEW_USER, ids=[a[0][-1] for a in NEW_USER])
def test_a_new_users_bad_value_is_one_line_exit_2(tmp_path, args, message):
    out = mti(args, cwd=tmp_path, timeout=120)
    assert out.returncode == 2, out.stderr[-2000:]
    assert out.stderr.strip() == f"mti: error: {message}" or (
        out.stderr.strip().startswith(f"mti: error: {message}") and "\n" not in out.stderr.strip()
    ), out.stderr[-2000:]
    assert "Traceback" not in out.stderr and not list(tmp_path.glob("outputs/*/*/config.yaml"))


def test_not_an_image_file(tmp_path):
    bad = tmp_path / "notes.png"
    bad.write_text("this is not a PNG")
    out = mti([*TINY, "search=invert", f"search.image={bad}", "search.steps=2"], cwd=tmp_path)
    assert out.returncode == 2
    assert "is not a readable image" in out.stderr and str(bad) in out.stderr


def test_inversion_of_an_image_file(tmp_path):
    img = tmp_path / "seed.png"
    save_png(img, torch.rand(3, 32, 32, generator=torch.Generator().manual_seed(0)))
    out = mti([*TINY, "search=invert", f"search.image={img}", "search.steps=10"], cwd=tmp_path)
    assert out.returncode == 0, out.stderr[-3000:]
    (run,) = (tmp_path / "outputs").glob("*/*")
    rows = json.loads((run / "metrics.json").read_text())["images"]
    assert [r["feature"][-3:] for r in rows] == ["(+)", "(-)"]
    assert rows[0]["end_activation"] > rows[1]["end_activation"]


@pytest.mark.slow
def test_killed_search_resumes_to_the_same_images(tmp_path):
    args = [*TINY, "checkpoint.every_n_steps=10", "search.inversions.enabled=false"]
    whole = mti([*args, "search.steps=120", "hydra.run.dir=whole"], cwd=tmp_path)
    assert whole.returncode == 0, whole.stderr[-3000:]
    run = tmp_path / "killed"
    env = dict(os.environ, WANDB_MODE="offline")
    # a run that cannot end before it is killed, however fast the machine: its step count only
    # bounds the trainer (each step's draws depend on the seed and the step alone), so resuming
    # it with search.steps=120 finishes the same computation as the whole run
    proc = subprocess.Popen(
        [MTI, *args, "search.steps=1000000", "hydra.run.dir=killed"],
        cwd=tmp_path,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    try:
        while not (run / "checkpoints" / "step000020.ckpt").exists():
            assert proc.poll() is None, "the run ended before it wrote its step-20 checkpoint"
            time.sleep(0.01)
        os.killpg(proc.pid, signal.SIGSTOP)  # stop it where it is, then read where that is
        last = torch.load(run / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=False)
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    assert 10 <= last["global_step"] < 120, last["global_step"]  # killed midway
    assert not (run / "tensors.safetensors").exists()
    resumed = mti(
        [*args, "search.steps=120", "hydra.run.dir=killed", "checkpoint.resume=true"], cwd=tmp_path
    )
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    record = json.loads((run / "metrics.json").read_text())
    assert record["resumed_from"].endswith("last.ckpt") and record["steps_run"] == 120
    a = load_tensors(tmp_path / "whole" / "tensors.safetensors")["images"]
    b = load_tensors(run / "tensors.safetensors")["images"]
    # two processes, the same kernels: a resumed Adam state within float rounding
    assert_reordered(b, a, scale=1.0)


@pytest.mark.slow
def test_ddp_two_processes_match_each_other_and_one_process(tmp_path):
    args = [*TINY, "search.steps=8", "search.draws=4", "search.inversions.enabled=false"]
    one = mti([*args, "hydra.run.dir=one"], cwd=tmp_path)
    assert one.returncode == 0, one.stderr[-3000:]
    two = mti(
        [*args, "hydra.run.dir=two", "trainer.devices=2", "trainer.strategy=ddp"], cwd=tmp_path
    )
    assert two.returncode == 0, two.stderr[-3000:]
    record = json.loads((tmp_path / "two" / "metrics.json").read_text())
    assert record["world_size"] == 2 and record["ddp_max_image_diff"] == 0.0
    a = load_tensors(tmp_path / "one" / "tensors.safetensors")["images"]
    b = load_tensors(tmp_path / "two" / "tensors.safetensors")["images"]
    # same draws and noise, split 2 x 2 instead of 1 x 4: only float summation order differs
    assert_reordered(b, a, tol=TRAJECTORY, scale=1.0)
