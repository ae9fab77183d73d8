"""Failed jobs of a multirun: each one leaves ``error.json`` in its run directory, and the
command that launched the sweep lists them all at the end.

Hydra stops a multirun at its first failed job's result and names only that one; on a
cluster the other jobs have run anyway, so the launching command reads every job's record
and prints one line per failed job (its number, overrides, error and SLURM log).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

from hydra.core.hydra_config import HydraConfig
from hydra.experimental.callback import Callback
from omegaconf import DictConfig

from mti_lightning.core.io import write_json

ERROR_FILE = "error.json"
_sweep_dirs: list[Path] = []  # the sweeps this process launched (set by SweepFailures)


class SweepFailures(Callback):
    """Remembers the sweep directory of a multirun launched from this process."""

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        _sweep_dirs.append(Path(str(config.hydra.sweep.dir)).resolve())


def clear_failure(run_dir: Path) -> None:
    """Forget the failure an earlier run of this job recorded (a sweep rerun in place)."""
    (run_dir / ERROR_FILE).unlink(missing_ok=True)


def record_failure(run_dir: Path, error: str) -> None:
    """Write the failed job's one-line error, overrides and job id into its run directory."""
    hc = HydraConfig.get()
    write_json(
        run_dir / ERROR_FILE,
        {
            "error": error,
            "job_num": hc.job.get("num"),
            "job_id": hc.job.get("id"),
            "overrides": list(hc.overrides.task),
        },
    )


def failed_jobs(sweep_dir: Path) -> list[str]:
    """One line per failed job of the sweep in ``sweep_dir``: number, overrides, error, log."""
    lines = []
    for path in sorted(sweep_dir.glob(f"*/{ERROR_FILE}"), key=lambda p: p.stat().st_mtime):
        rec = json.loads(path.read_text())
        where = f"run dir {path.parent}"
        logs = sorted(sweep_dir.glob(f".submitit/*/{rec['job_id']}_*log.err"))
        if logs:
            where += f", SLURM job {rec['job_id']}, log {logs[0]}"
        lines.append(f"  #{rec['job_num']} {' '.join(rec['overrides'])}: {rec['error']} ({where})")
    return lines


def report_failures() -> int:
    """Print the failed jobs of the sweeps this process launched; return how many failed."""
    lines = [line for d in _sweep_dirs for line in failed_jobs(d)]
    if lines:
        print(f"mti: error: {len(lines)} job(s) of the multirun failed:", file=sys.stderr)
        print("\n".join(lines), file=sys.stderr)
    return len(lines)
