"""Resume after a killed dataset pass: the pass runs in a subprocess that is SIGKILLed once
some shards exist; the rerun computes only the missing shards (the others keep their inode
and mtime) and the result equals an uninterrupted run's."""

from __future__ import annotations

import dataclasses
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import torch
from conftest import N_IMAGES, tiny_config

from mti_lightning.atlas import AtlasConfig, run_atlas
from mti_lightning.atlas.dataset_pass import load_pass
from mti_lightning.core.io import load_tensors


def cli_args(cfg: AtlasConfig) -> list[str]:
    """The ``--field value`` flags that rebuild ``cfg`` on the command line."""
    args = []
    for f in dataclasses.fields(cfg):
        value = getattr(cfg, f.name)
        text = (
            ",".join(value)
            if isinstance(value, list)
            else str(value).lower()
            if isinstance(value, bool)
            else str(value)
        )
        args += [f"--{f.name}", text]
    return args


def _shards(run_dir: Path) -> list[Path]:
    return sorted(run_dir.glob("dataset_pass/shards-*/shard_*.safetensors"))


def test_killed_pass_resumes_at_the_missing_shards(image_folder: Path, tmp_path: Path) -> None:
    cfg = tiny_config(image_folder, shard_size=2, batch_size=2)
    killed = tmp_path / "killed"
    cmd = [sys.executable, "-m", "mti_lightning.atlas", "--run-dir", str(killed)]
    cmd += ["--stage", "dataset_pass", *cli_args(cfg)]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 240
    while len(_shards(killed)) < 3 and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.001)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert proc.returncode == -signal.SIGKILL, proc.stderr.read().decode()[-2000:]
    before = {p.name: (p.stat().st_ino, p.stat().st_mtime_ns) for p in _shards(killed)}
    n_shards = N_IMAGES // 2
    assert 3 <= len(before) < n_shards
    assert not (killed / "dataset_pass" / "result.json").exists()

    res = run_atlas(cfg, killed, stage="dataset_pass")["dataset_pass"]
    assert res["computed_shards"] == n_shards - len(before)
    after = {p.name: (p.stat().st_ino, p.stat().st_mtime_ns) for p in _shards(killed)}
    assert len(after) == n_shards
    assert {name: after[name] for name in before} == before
    assert not list(killed.glob("dataset_pass/shards-*/.*.tmp"))

    whole = tmp_path / "whole"
    ref = run_atlas(cfg, whole, stage="dataset_pass")["dataset_pass"]
    assert ref["fingerprint"] == res["fingerprint"]
    a, b = load_pass(killed / res["shards"]), load_pass(whole / ref["shards"])
    assert a.keys() == b.keys()
    assert all(torch.equal(a[k], b[k]) for k in a)
    run_atlas(cfg, killed, stage="selection")
    run_atlas(cfg, whole, stage="selection")
    sa = load_tensors(killed / "selection" / "selection.safetensors")
    sb = load_tensors(whole / "selection" / "selection.safetensors")
    assert all(torch.equal(sa[k], sb[k]) for k in sa)
