"""A multirun with bad jobs (local launcher): each failed job leaves ``error.json``, the
others run, and ``mti -m`` lists every failed job and exits with 2."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

MTI = str(Path(sys.executable).parent / "mti")


def test_every_failed_job_is_listed_and_a_rerun_forgets_old_failures(tmp_path):
    env = dict(os.environ, WANDB_MODE="offline", PYTHONWARNINGS="ignore")
    args = [MTI, "-m", "model=curvenet", "target.layer=bn2", "logger=csv", "hydra.sweep.dir=sw"]
    out = subprocess.run(
        [*args, "target.channel=998,999"], cwd=tmp_path, env=env, capture_output=True, text=True
    )
    assert out.returncode == 2, out.stderr[-3000:]
    report = out.stderr[out.stderr.index("mti: error: 2 job(s) of the multirun failed:") :]
    lines = report.splitlines()[1:3]
    for num, line in enumerate(lines):
        assert line.startswith(f"  #{num} ") and f"target.channel={998 + num}" in line
        assert f"channel {998 + num} out of range for layer bn2: valid 0..31" in line
    record = json.loads((tmp_path / "sw" / "1" / "error.json").read_text())
    assert record["job_num"] == 1 and "target.channel=999" in record["overrides"]
    # the same sweep directory again with a valid channel for job 0: only job 1 is listed
    again = subprocess.run(
        [*args, "target.channel=0,999", "search.steps=1", "search.inversions.enabled=false"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
    )
    assert again.returncode == 2, again.stderr[-3000:]
    assert "mti: error: 1 job(s) of the multirun failed:" in again.stderr
    assert not (tmp_path / "sw" / "0" / "error.json").exists()
    assert (tmp_path / "sw" / "0" / "metrics.json").is_file()
