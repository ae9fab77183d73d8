"""Two nodes without SLURM: two ``mti`` processes joined by Lightning's environment variables
(``NODE_RANK``, ``MASTER_ADDR``, ``MASTER_PORT``) over loopback, gloo, one process each."""

from __future__ import annotations

import json
import os
import socket
import subprocess
from pathlib import Path

import pytest
from test_slurm_jobs import DDP, images
from test_slurm_sweeps import MTI
from tolerances import TRAJECTORY, assert_reordered

pytestmark = pytest.mark.slow


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_f_two_nodes_match_one_node_with_the_same_draws(tmp_path: Path, one_process_reference):
    env = {k: v for k, v in os.environ.items() if not k.startswith("SLURM_")}
    env |= {"MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(_free_port()), "WANDB_MODE": "offline"}
    args = [MTI, *DDP, "trainer.num_nodes=2", "trainer.strategy=ddp", "hydra.run.dir=two"]
    nodes = [
        subprocess.Popen(
            args,
            cwd=tmp_path,
            env=dict(env, NODE_RANK=str(rank)),
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        for rank in (0, 1)
    ]
    outs = [node.communicate(timeout=400)[0] for node in nodes]
    assert [n.returncode for n in nodes] == [0, 0], outs[0][-2000:] + outs[1][-2000:]
    record = json.loads((tmp_path / "two" / "metrics.json").read_text())
    assert record["world_size"] == 2 and record["ddp_max_image_diff"] == 0.0
    two, one = images(tmp_path / "two"), images(one_process_reference)
    assert_reordered(two, one, tol=TRAJECTORY, scale=1.0)
