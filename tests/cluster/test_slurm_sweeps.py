"""Sweeps on a real SLURM cluster through the submitit launcher (``hydra/launcher=slurm``)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from slurm_cluster import Cluster

pytestmark = pytest.mark.slow

MTI = str(Path(sys.executable).parent / "mti")
# a tiny CurveNet search: a few steps, two draws, short inversions
TINY = [
    "model=curvenet",
    "target.layer=bn2",
    "target.position=center",
    "search.steps=4",
    "search.draws=2",
    "search.inversions.steps=2",
]
# one CPU and 1 GB per job on the test node, no GPU
SLURM = [
    "hydra/launcher=slurm",
    "hydra.launcher.gpus_per_node=0",
    "hydra.launcher.cpus_per_task=1",
    "hydra.launcher.mem_gb=1",
    "hydra.launcher.timeout_min=10",
]


def mti(args: list[str], cwd: Path, env: dict[str, str], timeout: float = 400):
    env = dict(env, WANDB_MODE="offline", PYTHONWARNINGS="ignore")
    env.pop("WANDB_API_KEY", None)
    return subprocess.run(
        [MTI, *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout
    )


@pytest.fixture(scope="module")
def sweep(cluster: Cluster, tmp_path_factory: pytest.TempPathFactory):
    """One sweep of three units, the last one out of range: the sweep directory and output."""
    cwd = tmp_path_factory.mktemp("sweep")
    # the jobs' environment as README shows it: a venv activated by the sbatch script
    setup = f'hydra.launcher.setup=["source {sys.prefix}/bin/activate","echo venv: $VIRTUAL_ENV"]'
    out = mti(
        ["-m", *SLURM, setup, *TINY, "target.channel=1,2,999", "hydra.sweep.dir=sweep"],
        cwd=cwd,
        env=cluster.env,
    )
    return cwd / "sweep", out


def test_a_multirun_of_two_units_runs_as_two_slurm_jobs(sweep):
    sweep, out = sweep
    for num, channel in ((0, 1), (1, 2)):
        (log,) = (sweep / ".submitit").glob(f"*_{num}/*_{num}_0_log.out")
        assert "Job completed successfully" in log.read_text()
        assert f"venv: {sys.prefix}" in log.read_text()  # the setup lines ran
        run = sweep / str(num)
        record = json.loads((run / "metrics.json").read_text())
        assert record["steps_run"] == 4, out.stderr[-3000:]
        assert record["images"][0]["feature"] == f"bn2:{channel}@center"
        assert (run / "images" / "image_000.png").is_file()
        assert (run / "summary.png").is_file()
        (wandb_run,) = (run / "wandb").glob("offline-run-*")
        assert list(wandb_run.glob("run-*.wandb"))
    assert os.environ.get("SLURM_JOB_ID") is None  # the jobs ran under SLURM, not this process


def test_d_a_bad_unit_fails_alone_and_the_sweep_names_it(sweep):
    sweep, out = sweep
    assert out.returncode == 2, out.stderr[-3000:]
    assert not (sweep / "2" / "metrics.json").exists()
    (err_log,) = (sweep / ".submitit").glob("*_2/*_log.err")
    errors = [ln for ln in err_log.read_text().splitlines() if ln.startswith("mti: error:")]
    assert errors == ["mti: error: channel 999 out of range for layer bn2: valid 0..31"]
    report = out.stderr[out.stderr.index("mti: error: 1 job(s) of the multirun failed") :]
    failed = report.splitlines()[1]
    assert failed.startswith("  #2 ") and "target.channel=999" in failed
    assert "channel 999 out of range" in failed and str(err_log) in failed
