"""The session's SLURM cluster (``slurm_cluster.py``): started once for the tests of this folder.

Where SLURM is not installed or cannot start, these tests are skipped with the reason; under
``CI=true`` they fail instead, so CI never passes without having run them.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from slurm_cluster import Cluster, ClusterError, start


@pytest.fixture(scope="session")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    try:
        running = start(tmp_path_factory.mktemp("slurm"))
    except (ClusterError, OSError) as err:
        if os.environ.get("CI") == "true":
            pytest.fail(f"CI=true but the test SLURM cluster did not start: {err}", pytrace=False)
        pytest.skip(f"no SLURM cluster: {err}")
    yield running
    running.stop()


@pytest.fixture(scope="session")
def one_process_reference(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The DDP tests' search run as one process with all the draws (no SLURM)."""
    from test_slurm_jobs import DDP
    from test_slurm_sweeps import mti

    cwd = tmp_path_factory.mktemp("one_process")
    out = mti([*DDP, "hydra.run.dir=one"], cwd=cwd, env=dict(os.environ))
    assert out.returncode == 0, out.stderr[-3000:]
    return cwd / "one"
