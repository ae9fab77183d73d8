"""Every benchmark's ``--quick`` form runs to its end and writes its rows, in the benchmark's
environment (the project plus faccent, installed ``--no-deps`` as benchmarks/README.md says);
and a row the benchmark cannot run is refused by name in one line before any work.

The benchmarks are commands of the source tree (``python -m benchmarks.NAME`` from its root),
so these tests run them there. No figure is checked: speed is measured in benchmarks, never
asserted in tests."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
# benchmarks/README.md: faccent and the modules it imports that the project lacks
FACCENT = [
    "faccent==1.0.3",
    "einops==0.8.2",
    "kornia==0.4.1",
    "decorator==5.3.1",
    "imageio==2.38.1",
]
# each benchmark command (module and its options) -> the JSON file its --quick run writes
QUICK = {
    "bench_inversion": ("bench_inversion", [], "inversion"),
    "bench_mti": ("bench_mti", [], "mti"),
    "bench_units": ("bench_units", [], "units"),
    "bench_atlas_pass": ("bench_atlas_pass", [], "atlas_pass"),
    "bench_scaling": ("bench_scaling", [], "scaling"),
    "bench_step_network": ("bench_step_network", [], "step_network"),
    "bench_census": ("bench_census", [], "census"),
    "bench_circuit": ("bench_circuit", [], "circuit"),
    "bench_quality": ("bench_quality", [], "quality"),
    "bench_quality_mti": ("bench_quality_mti", [], "quality_mti"),
    "grey_floor": ("grey_floor", [], "grey_floor"),
    "profile_step": ("profile_step", [], "profile"),
    "profile_step --breakdown": ("profile_step", ["--breakdown"], "step_costs"),
}

pytestmark = pytest.mark.skipif(
    not (REPO / "benchmarks" / "common.py").is_file(), reason="no benchmarks/ beside the tests"
)


@pytest.fixture(scope="module")
def bench_env(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """The benchmark's environment: faccent in a folder of its own on PYTHONPATH, never in the
    project's environment. In CI a failed install fails the tests; elsewhere it skips them."""
    target = tmp_path_factory.mktemp("faccent")
    pip = [sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--target", str(target)]
    done = subprocess.run([*pip, *FACCENT], capture_output=True, text=True, timeout=300)
    if done.returncode != 0:
        message = f"could not install faccent for the benchmarks: {done.stderr[-1000:]}"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    path = os.pathsep.join([str(target), str(REPO), os.environ.get("PYTHONPATH", "")])
    return dict(os.environ, PYTHONPATH=path, WANDB_MODE="disabled", PYTHONWARNINGS="ignore")


def bench(env: dict[str, str], module: str, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", f"benchmarks.{module}", "--device", "cpu", *args],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )


@pytest.mark.slow
@pytest.mark.parametrize("command", sorted(QUICK))
def test_quick_form_runs_and_writes_its_rows(command: str, bench_env, tmp_path: Path) -> None:
    module, options, name = QUICK[command]
    done = bench(bench_env, module, *options, "--quick", "--out", str(tmp_path))
    assert done.returncode == 0, (done.stdout[-2000:], done.stderr[-3000:])
    record = json.loads((tmp_path / f"{name}.json").read_text())
    assert record["quick"] is True and record["rows"] and record["machine"], record


def test_a_row_it_cannot_run_is_refused_by_name_before_work(bench_env, tmp_path: Path) -> None:
    done = bench(
        bench_env, "bench_inversion", "--quick", "--models", "nosuch_net", "--out", str(tmp_path)
    )
    assert done.returncode != 0
    lines = done.stderr.strip().splitlines()
    assert lines and "no row for nosuch_net" in lines[-1], done.stderr[-2000:]
    assert "Traceback" not in done.stderr
    assert not (tmp_path / "inversion.json").exists()  # refused before its results file
