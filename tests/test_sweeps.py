"""Sweeps as users launch them: Hydra multirun (basic and joblib launchers, one W&B group),
the SLURM launcher config, and the W&B sweep files in ``sweeps/``.

No W&B server is reachable here, so each sweep file is parsed, its parameters expanded the way
W&B's grid (cartesian product) and random (independent draws) methods do, every point composed
with Hydra, and the agent's command run for two sampled points with tiny settings.
"""

from __future__ import annotations

import csv
import itertools
import json
import os
import random
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import wandb_offline
import yaml
from hydra import compose, initialize_config_module
from omegaconf import OmegaConf

BIN = Path(sys.executable).parent
MTI = str(BIN / "mti")
SWEEPS = sorted((Path(__file__).resolve().parents[1] / "sweeps").glob("*.yaml"))
FAST = [
    "search.steps=2",
    "search.draws=2",
    "search.inversions.enabled=false",
    "callbacks.transparency=false",
    "callbacks.snapshot_steps=[]",
    "checkpoint.every_n_steps=1000",
]
MACROS = ("${env}", "${program}", "${interpreter}", "${args_no_hyphens}")
DISTRIBUTIONS = ("int_uniform", "uniform", "q_uniform", "log_uniform_values", "categorical")


def _env() -> dict[str, str]:
    env = dict(os.environ, WANDB_MODE="offline", PYTHONWARNINGS="ignore", HF_HUB_OFFLINE="1")
    env["PATH"] = f"{BIN}{os.pathsep}{env.get('PATH', '')}"
    env.pop("WANDB_API_KEY", None)
    return env


def mti(args: list[str], cwd: Path, timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run(
        args, cwd=cwd, env=_env(), capture_output=True, text=True, timeout=timeout
    )


def compose_config(overrides: list[str]) -> dict:
    with initialize_config_module("mti_lightning.conf", version_base="1.3"):
        cfg = compose("config", overrides=overrides, return_hydra_config=True)
    return OmegaConf.to_container(cfg, resolve=False)


# ---------------------------------------------------------------- Hydra multirun


@pytest.fixture(scope="module")
def units_multirun(tmp_path_factory) -> Path:
    """``mti -m`` over two units with W&B (offline): the sweep directory."""
    cwd = tmp_path_factory.mktemp("multirun")
    out = mti(
        [
            MTI,
            "-m",
            "experiment=mti",
            "model=curvenet",
            "target.channel=range(0,2)",
            *FAST,
            "logger=wandb",
            "hydra.sweep.dir=multirun/units_bn2",
        ],
        cwd=cwd,
    )
    assert out.returncode == 0, out.stderr[-3000:]
    return cwd / "multirun" / "units_bn2"


def test_multirun_over_two_units_one_run_dir_and_wandb_run_each_in_one_group(units_multirun):
    jobs = sorted(p for p in units_multirun.iterdir() if p.is_dir())
    assert [j.name for j in jobs] == ["0", "1"]
    for unit, job in enumerate(jobs):
        record = json.loads((job / "metrics.json").read_text())
        assert [r["feature"] for r in record["images"]] == [f"bn2:{unit}@center"]
        config = yaml.safe_load((job / "config.yaml").read_text())
        assert config["logger"]["group"] == "units_bn2"
        (run,) = (job / "wandb").glob("offline-run-*")
        assert list(run.glob("run-*.wandb"))
        init_log = (job / "wandb" / "debug.log").read_text()
        assert re.search(r"""['"]group['"]: ['"]units_bn2['"]""", init_log)


def test_aggregate_of_a_multirun(units_multirun, tmp_path):
    from mti_lightning.face.api_config import compose_config as typed_config
    from mti_lightning.face.tasks import run_task

    cfg = typed_config(["experiment=aggregate", f"aggregate.runs={units_multirun}"])
    cfg.logger.kind = "csv"
    run_task("aggregate", cfg, tmp_path)
    rows = (tmp_path / "aggregate.csv").read_text().splitlines()
    assert rows[0].startswith("run,varied,model,kind,steps_run,feature")
    assert sorted(r.split(",")[:2] for r in rows[1:]) == [
        ["0", "target.channel=0"],
        ["1", "target.channel=1"],
    ]
    text = (tmp_path / "aggregate.txt").read_text()
    assert text.startswith("2 runs, 2 images") and "bn2:1@center" in text
    assert (tmp_path / "aggregate.png").stat().st_size > 0
    # the rows come from each run's summary (what its W&B run holds), one more row per run
    with open(tmp_path / "aggregate.csv") as f:
        units = {r["run"]: r for r in csv.DictReader(f)}
    with open(tmp_path / "aggregate_runs.csv") as f:
        runs = {r["run"]: r for r in csv.DictReader(f)}
    for job in ("0", "1"):
        summary = json.loads((units_multirun / job / "metrics.json").read_text())["summary"]
        feature = f"bn2:{job}@center"
        assert float(units[job]["end_tension"]) == pytest.approx(
            summary[f"unit/{feature}/end_tension"]
        )
        assert float(runs[job]["mean_end_tension"]) == pytest.approx(
            summary["summary/mean_end_tension"]
        )
        assert runs[job]["layer"] == "bn2" and float(runs[job]["layer_depth"]) == pytest.approx(
            2 / 3
        )


def test_aggregate_of_nothing_is_a_clear_error(tmp_path):
    from mti_lightning.core.errors import MTIConfigError
    from mti_lightning.journeys.compare.aggregate import find_metrics

    with pytest.raises(MTIConfigError, match=r"aggregate.runs='.*/none\*': no run directory"):
        find_metrics(str(tmp_path / "none*"))


@pytest.mark.slow
def test_joblib_launcher_runs_two_jobs_in_parallel_processes(tmp_path):
    out = mti(
        [
            MTI,
            "-m",
            "hydra/launcher=joblib",
            "hydra.launcher.n_jobs=2",
            "experiment=mti",
            "model=curvenet",
            "target.channel=3,4",
            *FAST,
            "logger=csv",
            "hydra.sweep.dir=jl",
        ],
        cwd=tmp_path,
    )
    assert out.returncode == 0, out.stderr[-3000:]
    assert "Joblib.Parallel(n_jobs=2" in out.stdout + out.stderr
    for job, unit in (("0", 3), ("1", 4)):
        record = json.loads((tmp_path / "jl" / job / "metrics.json").read_text())
        assert record["images"][0]["feature"] == f"bn2:{unit}@center"


def test_slurm_launcher_config_composes():
    """Composition only: no SLURM cluster here to submit to."""
    cfg = compose_config(["hydra/launcher=slurm", "hydra.launcher.partition=gpu", "trainer=gpu"])
    launcher = cfg["hydra"]["launcher"]
    assert launcher["_target_"].endswith("submitit_launcher.SlurmLauncher")
    assert launcher["partition"] == "gpu" and launcher["gpus_per_node"] == 1
    assert launcher["submitit_folder"] == "${hydra.sweep.dir}/.submitit/%j"


# ---------------------------------------------------------------- W&B sweep files


def check_sweep(sweep: dict[str, Any], name: str) -> None:
    """The keys W&B needs, the metric it ranks by, and the command shape the project uses."""
    assert sweep.get("method") in ("grid", "random", "bayes"), f"{name}: method"
    metric = sweep.get("metric")
    assert isinstance(metric, dict) and metric.get("goal") in ("maximize", "minimize"), name
    assert str(metric.get("name", "")).startswith("summary/"), f"{name}: metric name"
    assert sweep.get("program") == "mti", f"{name}: program must be mti"
    command = sweep.get("command")
    assert isinstance(command, list) and command[:2] == ["${env}", "${program}"], name
    assert "${args_no_hyphens}" in command, f"{name}: Hydra needs key=value arguments"
    for token in command:
        assert token in MACROS or "=" in token, f"{name}: {token!r} is no Hydra override"
    params = sweep.get("parameters")
    assert isinstance(params, dict) and params, f"{name}: parameters"
    for key, spec in params.items():
        kinds = [k for k in ("value", "values", "distribution") if k in spec]
        assert len(kinds) == 1, f"{name}: {key} needs one of value, values, distribution"
        if sweep["method"] == "grid":
            assert kinds[0] != "distribution", f"{name}: grid over {key} needs values"
        if kinds[0] == "distribution":
            assert spec["distribution"] in DISTRIBUTIONS, f"{name}: {key} distribution"
        if kinds[0] == "values":
            assert isinstance(spec["values"], list) and spec["values"], f"{name}: {key}"


def grid_points(params: dict[str, Any]) -> list[dict[str, Any]]:
    """W&B grid: the cartesian product of every parameter's values, in file order."""
    axes = [spec["values"] if "values" in spec else [spec["value"]] for spec in params.values()]
    return [dict(zip(params, combo)) for combo in itertools.product(*axes)]


def random_point(params: dict[str, Any], rng: random.Random) -> dict[str, Any]:
    """W&B random: each parameter drawn independently from its values or distribution."""
    point = {}
    for key, spec in params.items():
        dist = spec.get("distribution", "categorical" if "values" in spec else "constant")
        if dist == "constant":
            point[key] = spec["value"]
        elif dist == "categorical":
            point[key] = rng.choice(spec["values"])
        elif dist == "int_uniform":
            point[key] = rng.randint(spec["min"], spec["max"])
        elif dist == "uniform":
            point[key] = rng.uniform(spec["min"], spec["max"])
        elif dist == "q_uniform":
            q = spec.get("q", 1)
            point[key] = round(rng.uniform(spec["min"], spec["max"]) / q) * q
        else:  # log_uniform_values
            lo, hi = spec["min"], spec["max"]
            point[key] = lo * (hi / lo) ** rng.random()
    return point


def agent_command(sweep: dict[str, Any], point: dict[str, Any]) -> list[str]:
    """The command W&B's agent runs for ``point``: macros replaced as the agent does, values
    formatted by W&B's own function."""
    from wandb.sdk.launch.sweeps.utils import create_sweep_command_args

    args = create_sweep_command_args({"args": {k: {"value": v} for k, v in point.items()}})
    macros = {
        "${env}": ["/usr/bin/env"],
        "${program}": [sweep["program"]],
        "${interpreter}": ["python"],
        "${args_no_hyphens}": args["args_no_hyphens"],
    }
    return [part for token in sweep["command"] for part in macros.get(token, [token])]


def with_overrides(command: list[str], overrides: list[str]) -> list[str]:
    """``command`` with each ``key=value`` of ``overrides`` replacing the same key or added."""
    keys = {o.split("=", 1)[0]: o for o in overrides}
    kept = [t for t in command if t.split("=", 1)[0] not in keys]
    return kept + list(keys.values())


def run_point(sweep: dict[str, Any], seed: int = 0) -> dict[str, Any]:
    """The point a test runs: grid, the last point (every axis at its last value; every point
    composes in ``test_sweep_file_composes_at_every_point``); random and bayes (whose first
    points are drawn from the priors too), one seeded draw."""
    if sweep["method"] == "grid":
        return grid_points(sweep["parameters"])[-1]
    return random_point(sweep["parameters"], random.Random(seed))


def tiny_input(command: list[str]) -> list[str]:
    """``model.input_size=[3,64,64]`` for timm CNNs (any input size); ViTs keep theirs."""
    name = compose_config(command[2:])["model"]["name"]
    return [] if name == "curvenet" or "vit" in name else ["model.input_size=[3,64,64]"]


def test_there_are_the_four_sweep_files():
    assert [p.stem for p in SWEEPS] == [
        "architectures_grid",
        "layers_random",
        "search_tuning_bayes",
        "units_grid",
    ]


def test_grid_and_random_expansion():
    params = {"a": {"values": [1, 2]}, "b": {"value": "x"}, "c": {"values": [3, 4, 5]}}
    assert len(grid_points(params)) == 6 and grid_points(params)[1] == {"a": 1, "b": "x", "c": 4}
    draw = random_point(
        {"n": {"distribution": "int_uniform", "min": 2, "max": 3}}, random.Random(0)
    )
    assert draw["n"] in (2, 3)


@pytest.mark.parametrize("path", SWEEPS, ids=[p.stem for p in SWEEPS])
def test_sweep_file_composes_at_every_point(path):
    sweep = yaml.safe_load(path.read_text())
    check_sweep(sweep, path.name)
    points = (
        grid_points(sweep["parameters"])
        if sweep["method"] == "grid"
        else [random_point(sweep["parameters"], random.Random(seed)) for seed in range(20)]
    )
    for point in points:
        command = agent_command(sweep, point)
        assert command[:2] == ["/usr/bin/env", "mti"]
        cfg = compose_config(command[2:])
        choices = cfg["hydra"]["runtime"]["choices"]
        for key, value in point.items():
            got = choices[key] if key in choices else OmegaConf.select(OmegaConf.create(cfg), key)
            assert got == value, (path.name, key, value, got)


@pytest.mark.slow
@pytest.mark.parametrize("path", SWEEPS, ids=[p.stem for p in SWEEPS])
def test_sweep_file_runs_a_point_that_logs_its_metric(path, tmp_path):
    """A point runs as the agent runs it, logging to W&B (offline here): its run's summary
    holds the metric the sweep file ranks by, equal to ``metrics.json``'s."""
    sweep = yaml.safe_load(path.read_text())
    procs = []
    for k, point in enumerate([run_point(sweep)]):
        command = agent_command(sweep, point)
        # the one change besides tiny settings: the CPU trainer (no GPU here)
        tiny = [*FAST, *tiny_input(command), "trainer=cpu", "logger=wandb", f"hydra.run.dir=run{k}"]
        command = with_overrides(command, tiny)
        err = open(tmp_path / f"stderr{k}.txt", "w")  # noqa: SIM115 (closed below)
        proc = subprocess.Popen(command, cwd=tmp_path, env=_env(), stdout=err, stderr=err)
        procs.append((command, proc, err))
    for k, (command, proc, err) in enumerate(procs):
        proc.wait(timeout=300)
        err.close()
        log = (tmp_path / f"stderr{k}.txt").read_text()
        assert proc.returncode == 0, f"{' '.join(command)}\n{log[-3000:]}"
        record = json.loads((tmp_path / f"run{k}" / "metrics.json").read_text())
        assert record["steps_run"] == 2
        assert all(r["end_tension"] is not None for r in record["images"])
        metric = sweep["metric"]["name"]
        logged = wandb_offline.summary(tmp_path / f"run{k}")
        assert logged[metric] == pytest.approx(record["summary"][metric]), (metric, command)
