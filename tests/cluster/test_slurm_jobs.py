"""One search job on a real SLURM cluster: DDP across the job's tasks, and preemption."""

from __future__ import annotations

import json
import subprocess
import time
from pathlib import Path

import pytest
import torch
from slurm_cluster import Cluster
from test_slurm_sweeps import MTI, SLURM, TINY, mti
from tolerances import TRAJECTORY, assert_reordered

from mti_lightning.core.io import load_tensors

pytestmark = pytest.mark.slow

# same draws per step in total whatever the number of processes
DDP = [
    *TINY,
    "target.channel=1",
    "search.steps=8",
    "search.draws=4",
    "search.inversions.enabled=false",
]


def images(run: Path) -> torch.Tensor:
    return load_tensors(run / "tensors.safetensors")["images"]


def test_b_two_slurm_tasks_run_one_search_as_ddp(
    cluster: Cluster, tmp_path: Path, one_process_reference: Path
):
    out = mti(
        [
            "-m",
            *SLURM,
            *DDP,
            "hydra.launcher.tasks_per_node=2",
            "trainer.devices=2",
            "trainer.strategy=ddp",
            "hydra.sweep.dir=sweep",
        ],
        cwd=tmp_path,
        env=cluster.env,
    )
    assert out.returncode == 0, out.stderr[-3000:]
    run = tmp_path / "sweep" / "0"
    assert len(list((tmp_path / "sweep" / ".submitit").glob("*/*_log.out"))) == 2  # two tasks
    record = json.loads((run / "metrics.json").read_text())
    assert record["world_size"] == 2 and record["ddp_max_image_diff"] == 0.0
    ddp, one = images(run), images(one_process_reference)
    # the same draws, split 2 x 2 instead of 1 x 4: only float summation order differs
    assert_reordered(ddp, one, tol=TRAJECTORY, scale=1.0)


PREEMPT = [
    *TINY,
    "target.channel=1",
    "search.steps=60",
    "search.inversions.enabled=false",
    "checkpoint.every_n_steps=10",
    "logger=csv",
]


def test_c_a_preempted_job_is_requeued_and_ends_as_if_never_stopped(
    cluster: Cluster, tmp_path: Path
):
    sweep = tmp_path / "sweep"
    env = dict(cluster.env, WANDB_MODE="offline")
    launcher = subprocess.Popen(
        [MTI, "-m", *SLURM, *PREEMPT, f"hydra.sweep.dir={sweep}"],
        cwd=tmp_path,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        deadline = time.time() + 300
        # a step checkpoint stays once written (each one replaces the one before), so a
        # poller that a loaded machine wakes late still sees it
        while not list((sweep / "0" / "checkpoints").glob("step*.ckpt")):
            assert launcher.poll() is None and time.time() < deadline, "job ended before the signal"
            time.sleep(0.1)
        (job_dir,) = [p.parent for p in (sweep / ".submitit").glob("*/*_submitted.pkl")]
        # what a cluster sends before the time limit or on preemption (--signal=USR2@...)
        cluster.run("scancel", "--signal=USR2", job_dir.name)
        out, _ = launcher.communicate(timeout=400)
    finally:
        if launcher.poll() is None:
            launcher.kill()
    assert launcher.returncode == 0, out[-3000:]
    run = sweep / "0"
    record = json.loads((run / "metrics.json").read_text())
    assert record["steps_run"] == 60
    assert record["resumed_from"] is not None and Path(record["resumed_from"]).name.startswith(
        "hpc_ckpt_"
    ), record["resumed_from"]
    log = "\n".join(p.read_text() for p in job_dir.glob("*_log.out"))
    assert "Requeued SLURM job" in log or "requeing job" in log, log[-2000:]
    whole = mti([*PREEMPT, "hydra.run.dir=whole"], cwd=tmp_path, env=env)
    assert whole.returncode == 0, whole.stderr[-3000:]
    a, b = images(tmp_path / "whole"), images(run)
    assert_reordered(b, a, scale=1.0)  # resumed: the same steps within float rounding
