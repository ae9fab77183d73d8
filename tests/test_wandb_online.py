"""W&B online against a real server (``openwandb serve`` on 127.0.0.1, tests/wandb_server.py):
what each run of a multirun over two units leaves on the server equals its run directory, and
the runs are one group; ``logger.mode=auto`` goes online when the server answers and offline
(said once) when it does not; a server killed mid-run costs the run nothing (exit 0, every
file written, the local copy uploads later with ``wandb sync``); an offline run uploads with
``wandb sync``. All traffic stays on loopback.

Without the ``wandb-server`` extra installed these tests skip, except in CI (``CI=true``),
where they fail."""

from __future__ import annotations

import json
import os
import re
import shlex
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
import wandb_server
from tolerances import FLOAT64_RECORD
from wandb_server import WandbServer

pytestmark = pytest.mark.slow

MTI = str(Path(sys.executable).parent / "mti")
UNITS = ["bn2:9@center", "bn2:12@center"]
QUANTITIES = ("activation", "e_plus", "e_minus", "tension", "tension_ratio")
TINY = [
    "search.steps=6",
    "search.draws=2",
    "search.inversions.steps=2",
    "search.inversions.draws=2",
    "trainer.log_every_n_steps=2",
    "callbacks.snapshot_steps=[]",
    "checkpoint.every_n_steps=1000",
]
OFFLINE_LINE = "logging W&B offline"


def _require_server() -> None:
    if wandb_server.installed():
        return
    why = "openwandb is not installed: pip install '.[dev,wandb-server]' (README's test command)"
    if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
        pytest.fail(f"CI: {why}")
    pytest.skip(why)


@pytest.fixture(scope="module")
def server(tmp_path_factory) -> WandbServer:
    """One server for the module's runs."""
    _require_server()
    srv = WandbServer(tmp_path_factory.mktemp("wandb-server")).start()
    yield srv
    srv.stop()


def mti(args: list[str], cwd: Path, env: dict[str, str]) -> subprocess.CompletedProcess:
    return subprocess.run(
        [MTI, *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=600
    )


def run_id(run_dir: Path) -> str:
    """The W&B id of the one online run under ``run_dir/wandb``."""
    (local,) = (Path(run_dir) / "wandb").glob("run-*-*")
    return local.name.rsplit("-", 1)[1]


def metrics(run_dir: Path) -> dict[str, Any]:
    return json.loads((Path(run_dir) / "metrics.json").read_text())


def assert_same_summary(on_server: dict[str, Any], record: dict[str, Any]) -> None:
    for key, value in record["summary"].items():
        if value is None:
            assert on_server.get(key) is None, key
        else:
            assert on_server[key] == pytest.approx(value, rel=FLOAT64_RECORD.rtol), key


# ---------------------------------------------------------------- an online multirun


@pytest.fixture(scope="module")
def online(server, tmp_path_factory) -> tuple[list[Path], subprocess.CompletedProcess]:
    """``mti -m`` over two units with ``logger.mode=auto``, the server's URL and key: the job
    directories (unit 9, unit 12) and the command's output."""
    cwd = tmp_path_factory.mktemp("online")
    args = ["-m", *TINY, "target.channel=9,12", "logger.mode=auto", "hydra.sweep.dir=units"]
    out = mti(args, cwd, server.env())
    assert out.returncode == 0, out.stderr[-3000:]
    return [cwd / "units" / "0", cwd / "units" / "1"], out


def test_auto_mode_goes_online_with_a_key_and_an_answering_server(online, server):
    jobs, out = online
    assert OFFLINE_LINE not in out.stdout + out.stderr
    assert "mti: W&B:" not in out.stdout + out.stderr
    runs = server.runs()
    for job in jobs:
        assert not list((job / "wandb").glob("offline-run-*"))
        assert runs[run_id(job)]["state"] == "finished"


def test_online_runs_on_the_server_equal_their_run_directories(online, server):
    jobs, _ = online
    runs = server.runs()
    for unit, job in zip(UNITS, jobs, strict=True):
        record, rid = metrics(job), run_id(job)
        assert [r["feature"] for r in record["images"]] == [unit]
        run = runs[rid]
        assert_same_summary(run["summary"], record)
        assert run["config"]["run"]["value"] == record["run"]
        assert run["config"]["search"]["value"]["steps"] == 6
        # the per-unit curves, as history keys
        assert {f"{q}/{unit}" for q in QUANTITIES} | {"loss"} <= server.history_keys(rid)
        # the results table, as the client uploaded it
        (table_file,) = (server.run_files(rid) / "media" / "table").glob("results_*.table.json")
        table = json.loads(table_file.read_text())
        columns = table["columns"]
        for row, saved in zip(table["data"], record["images"], strict=True):
            assert row[columns.index("unit")] == saved["feature"]
            for key in ("end_tension", "end_activation", "plus_activation", "minus_activation"):
                assert row[columns.index(key)] == pytest.approx(
                    saved[key], rel=FLOAT64_RECORD.rtol
                ), key
            for name in ("image", "plus_inversion", "minus_inversion", "transparency"):
                assert row[columns.index(name)], name  # an image cell (its file stays local)
        # the outputs artifact: its name, type and metadata are what the server keeps of it
        # (openwandb answers createArtifact with COMMITTED, so the client uploads no files)
        label = "-".join(job.resolve().parts[-2:])
        (art,) = [a for a in server.artifacts(rid) if a["artifact_type"] == "search"]
        assert art["name"] == f"search-{label}"
        aggregates = {k: v for k, v in record["summary"].items() if k.startswith("summary/")}
        assert art["metadata"] == pytest.approx({**record["run"], **aggregates})


def test_multirun_jobs_are_one_group(online, server):
    jobs, _ = online
    runs = server.runs()
    for job in jobs:
        assert runs[run_id(job)]["config"]["logger"]["value"]["group"] == "units"
        # the group went to the server with the run (openwandb keeps no group of its own)
        init_log = (job / "wandb" / "debug.log").read_text()
        assert re.search(r"""['"]group['"]: ['"]units['"]""", init_log)


# ---------------------------------------------------------------- server down, then sync


def test_auto_mode_with_the_server_down_goes_offline_once_and_syncs_later(server, tmp_path):
    down = f"http://127.0.0.1:{wandb_server.free_port()}"
    out = mti(
        [*TINY, "target.channel=[9]", "logger.mode=auto", "hydra.run.dir=run"],
        tmp_path,
        server.env(WANDB_BASE_URL=down),
    )
    assert out.returncode == 0, out.stderr[-3000:]
    said = [line for line in out.stdout.splitlines() if OFFLINE_LINE in line]
    assert len(said) == 1 and down in said[0], out.stdout
    (local,) = (tmp_path / "run" / "wandb").glob("offline-run-*")
    sync = subprocess.run(
        [sys.executable, "-m", "wandb", "sync", str(local)],
        env=server.env(),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert sync.returncode == 0, sync.stdout + sync.stderr
    rid = local.name.rsplit("-", 1)[1]
    assert_same_summary(server.runs()[rid]["summary"], metrics(tmp_path / "run"))


# ---------------------------------------------------------------- the server killed mid-run


def test_server_killed_mid_run_costs_nothing_and_the_run_syncs_later(tmp_path):
    _require_server()
    srv = WandbServer(tmp_path / "server").start()
    try:
        args = [
            *TINY,
            "search.steps=16",
            "callbacks.snapshot_steps=[2]",
            "target.channel=[9,12]",
            "logger.mode=online",
            "hydra.run.dir=run",
        ]
        run_dir = tmp_path / "run"
        proc = subprocess.Popen(
            [MTI, *args],
            cwd=tmp_path,
            env=srv.env(),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        snapshot = run_dir / "snapshots" / "step_000002.png"
        while not snapshot.exists() and proc.poll() is None:
            time.sleep(0.1)
        srv.stop(signal.SIGKILL)  # step 2 of 16 logged: the server dies under the run
        killed = time.monotonic()
        stdout, stderr = proc.communicate(timeout=600)
        print(f"exit {time.monotonic() - killed:.1f} s after the server was killed")
        assert proc.returncode == 0, stderr[-3000:]
        warnings = [line for line in stderr.splitlines() if line.startswith("mti: W&B:")]
        assert len(warnings) == 1, stderr[-3000:]
        assert f"the run is kept in {run_dir / 'wandb'}" in warnings[0]
        record = metrics(run_dir)
        assert record["steps_run"] == 16
        for name in ("summary.png", "summary.txt", "tensors.safetensors", "config.yaml"):
            assert (run_dir / name).is_file(), name
        for k in range(2):
            assert (run_dir / "images" / f"image_{k:03d}.png").is_file()
            assert (run_dir / "inversions" / f"plus_{k:03d}.png").is_file()
            assert (run_dir / "inversions" / f"minus_{k:03d}.png").is_file()
        command = re.search(r"`(wandb sync [^`]+)`", warnings[0]).group(1)
        srv.start()  # the server is back: the run's local copy uploads
        sync = subprocess.run(
            [sys.executable, "-m", *shlex.split(command)],
            env=srv.env(),
            capture_output=True,
            text=True,
            timeout=300,
        )
        assert sync.returncode == 0, sync.stdout + sync.stderr
        assert_same_summary(srv.runs()[run_id(run_dir)]["summary"], record)
    finally:
        srv.stop()
