"""Resume after a killed dataset pass: the pass runs in ``mti experiment=atlas``, SIGKILLed once
some shards exist; the rerun computes only the missing shards (the others keep their inode
and mtime) and the result equals an uninterrupted run's."""

from __future__ import annotations

import dataclasses
import os
import signal
import subprocess
import time
from pathlib import Path

import torch
from conftest import MTI, N_IMAGES, tiny_config

from mti_lightning.core.io import load_tensors
from mti_lightning.journeys.atlas import AtlasConfig, run_atlas
from mti_lightning.journeys.atlas.dataset_pass import load_pass
from mti_lightning.journeys.atlas.face import GONE


def mti_args(cfg: AtlasConfig) -> list[str]:
    """The ``mti experiment=atlas`` overrides that rebuild ``cfg`` (the model and the feature
    through the search's ``model.*``/``target`` keys, every other field as ``atlas.FIELD``)."""
    size = cfg.input_size if isinstance(cfg.input_size, list) else [3, cfg.input_size] * 2
    args = [
        "experiment=atlas",
        f"model.name={cfg.model}",
        f"model.input_size=[{','.join(str(v) for v in size[-3:])}]",
        f"target={cfg.feature}",
        "logger=csv",
    ]
    for f in dataclasses.fields(cfg):
        if f.name in GONE:
            continue
        value = getattr(cfg, f.name)
        text = (
            f"[{','.join(value)}]"
            if isinstance(value, list)
            else str(value).lower()
            if isinstance(value, bool)
            else f"'{value}'"
            if isinstance(value, str)
            else str(value)
        )
        args.append(f"atlas.{f.name}={text}")
    return args


def _shards(run_dir: Path) -> list[Path]:
    return sorted(run_dir.glob("dataset_pass/shards-*/shard_*.safetensors"))


def test_killed_pass_resumes_at_the_missing_shards(image_folder: Path, tmp_path: Path) -> None:
    cfg = tiny_config(image_folder, shard_size=2, batch_size=2, input_size=[3, 32, 32])
    killed = tmp_path / "killed"
    cmd = [MTI, *mti_args(cfg), "stage=dataset_pass", f"hydra.run.dir={killed}"]
    env = dict(os.environ, WANDB_MODE="offline")
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env)
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
