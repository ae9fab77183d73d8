"""The decomposition journey: a toy whose attributions are a known sum of k non-negative parts
is recovered; bad input is one line before any work; a rerun skips every stage; the command and
the API give the same record on CurveNet; the command under two-process DDP (gloo, CPU) gives
the numbers of one process, and a one-process rerun of its run directory skips every stage."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn as nn
from scipy.optimize import linear_sum_assignment
from tolerances import assert_reordered
from torch.utils.data import Dataset

import mti_lightning as mti
from mti_lightning.core.io import load_tensors
from mti_lightning.core.models import LoadedModel, load_model

COSINE_TOL = 0.99
C, K = 12, 3  # channels of the attribution layer; colours, each driving C // K channels
TARGET = "unit:0@mean"


class ColourNet(nn.Module):
    """``feat = relu(M x)`` with colour j feeding channels ``[4j, 4j + 4)`` only, then one
    1x1 unit with signed weights ``w``: over constant-colour images the summed attribution at
    ``feat`` is ``sum_j colour_j * M[:, j] * w``, so E+ and E- are sums of K known parts."""

    def __init__(self, w: torch.Tensor):
        super().__init__()
        self.mix = nn.Conv2d(3, C, 1, bias=False)
        self.feat = nn.ReLU()
        self.unit = nn.Conv2d(C, 1, 1, bias=False)
        m = torch.zeros(C, 3)
        gen = torch.Generator().manual_seed(1)
        for j in range(K):
            m[4 * j : 4 * j + 4, j] = 0.5 + torch.rand(4, generator=gen)
        with torch.no_grad():
            self.mix.weight.copy_(m[:, :, None, None])
            self.unit.weight.copy_(w.view(1, C, 1, 1))
        self.m = m

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.unit(self.feat(self.mix(x)))


SIGNED = torch.tensor([1.0, -1.0, 0.5, -0.7] * 3)


class Colours(Dataset):
    """Constant-colour 8x8 images, each colour present with probability 0.6."""

    def __init__(self, n: int = 120):
        gen = torch.Generator().manual_seed(0)
        c = torch.rand(n, 3, generator=gen) * (torch.rand(n, 3, generator=gen) < 0.6)
        self.images = c[:, :, None, None].expand(n, 3, 8, 8).contiguous()

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, i: int) -> torch.Tensor:
        return self.images[i]


def toy(w: torch.Tensor = SIGNED) -> LoadedModel:
    return load_model(ColourNet(w).eval(), input_size=(3, 8, 8), mean=(0, 0, 0), std=(1, 1, 1))


QUICK = {"logger": None, "render": False}


def matched(found: torch.Tensor, true: torch.Tensor) -> np.ndarray:
    a = torch.nn.functional.normalize(found.double(), dim=1)
    b = torch.nn.functional.normalize(true.double(), dim=1)
    cos = (a @ b.T).numpy()
    rows, cols = linear_sum_assignment(-cos)
    return cos[rows, cols]


def test_toy_parts_recovered(tmp_path):
    lm = toy()
    result = mti.decompose(lm, TARGET, data=Colours(), k=K, layer="feat", run_dir=tmp_path, **QUICK)
    m = lm.model.m
    for part, sign in (("plus", 1.0), ("minus", -1.0)):
        true = (m * (sign * SIGNED).clamp_min(0)[:, None]).T  # (K, C)
        assert matched(result.weights(part), true).min() >= COSINE_TOL
    shares = [r["share"] for r in result.rows if r["part"] == "minus"]
    assert abs(sum(shares) - 1.0) < 0.02
    auto = mti.decompose(lm, TARGET, data=Colours(), layer="feat", run_dir=tmp_path / "a",
                         fraction=0.99, **QUICK)
    assert auto.weights("plus").shape[0] == K


@pytest.mark.parametrize(
    "options, message",
    [
        ({"k": 0}, r"decompose\.k=0 .*12 channels.*1 <= k <= 12"),
        ({"k": 13}, r"decompose\.k=13 .*12 channels"),
        ({"k": 2, "parts": ["minus", "both"]}, r"parts=\['minus', 'both'\]"),
    ],
)
def test_bad_input_is_one_line_before_work(tmp_path, options, message):
    with pytest.raises(mti.MTIConfigError, match=message) as err:
        mti.decompose(toy(), TARGET, data=Colours(), layer="feat", run_dir=tmp_path,
                      **{**QUICK, **options})
    assert "\n" not in str(err.value)
    assert not list(tmp_path.rglob("*.safetensors"))


def test_no_inhibition_says_decompose_plus_only(tmp_path):
    lm = toy(SIGNED.abs())
    with pytest.raises(mti.MTIConfigError, match=r"no E- .*parts=\[plus\]") as err:
        mti.decompose(lm, TARGET, data=Colours(), k=2, layer="feat", run_dir=tmp_path, **QUICK)
    assert "\n" not in str(err.value)
    plus = mti.decompose(lm, TARGET, data=Colours(), k=2, layer="feat", parts=["plus"],
                         run_dir=tmp_path, **QUICK)
    assert {r["part"] for r in plus.rows} == {"plus"}


def test_rerun_skips_every_stage_with_identical_results(tmp_path):
    args = {"data": Colours(40), "k": 2, "layer": "feat", "run_dir": tmp_path, "logger": None,
            "render_steps": 3, "render_draws": 1}
    first = mti.decompose(toy(), TARGET, **args)
    second = mti.decompose(toy(), TARGET, **args)
    assert not any(s["skipped"] for s in first.record["stages"].values())
    assert all(s["skipped"] for s in second.record["stages"].values())
    assert first.rows == second.rows
    again = mti.decompose(toy(), TARGET, **{**args, "k": 1})
    stages = again.record["stages"]
    assert stages["data_pass"]["skipped"] and not stages["nmf"]["skipped"]


CURVENET = ["decompose.curves_n=48", "decompose.k=2", "decompose.render_steps=2",
            "decompose.render_draws=1"]


def run_mti(args: list[str], cwd: Path) -> str:
    """The installed ``mti`` command, W&B offline; it must succeed. Returns its output."""
    mti_cmd = str(Path(sys.executable).parent / "mti")
    env = {"WANDB_MODE": "offline", "PYTHONWARNINGS": "ignore",
           "PATH": str(Path(sys.executable).parent)}
    out = subprocess.run([mti_cmd, *args], cwd=cwd, env=env, capture_output=True, text=True,
                         timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    return out.stdout + out.stderr


def test_command_and_api_give_the_same_record_on_curvenet(tmp_path):
    run_mti(["experiment=decompose", *CURVENET, "logger=wandb", "hydra.run.dir=cli"], tmp_path)
    cli = json.loads((tmp_path / "cli" / "decompose" / "components.json").read_text())
    api = mti.decompose("curvenet", "bn2:19@center", k=2, curves_n=48, render_steps=2,
                        render_draws=1, logger=None, run_dir=tmp_path / "api").record
    assert cli["unit"] == api["unit"] == "bn2:19@center" and cli["layer"] == "pool1"
    assert len(cli["components"]) == 4
    for a, b in zip(cli["components"], api["components"]):
        assert a["top_images"] == b["top_images"] and a["top_channels"] == b["top_channels"]
        assert a["share"] == pytest.approx(b["share"], rel=1e-4, abs=1e-6)
        assert a["render_cosine"] == pytest.approx(b["render_cosine"], abs=1e-4)
    assert (tmp_path / "cli" / "decompose" / "components.png").stat().st_size > 5_000
    assert list((tmp_path / "cli" / "wandb").glob("offline-run-*/files/media/table/decompose_*"))


@pytest.mark.slow
def test_ddp_gives_the_numbers_of_one_process_and_resumes(tmp_path):
    """``mti experiment=decompose`` over two processes (gloo, CPU; the data pass's shards split
    between them, NMF and rendering on rank 0) against one process: the same top images and
    channels, and shares, explained fractions, channel weights and render cosines equal up to
    the reordered fp32 sums of a sharded pass (``REORDERED``: on one CPU they are bit-equal, the
    per-image arithmetic being the same). A one-process rerun of the DDP run directory skips
    every stage and returns its rows."""
    shards = "decompose.shard_size=16"  # 48 images: three shards over the two processes
    log = run_mti(["experiment=decompose", *CURVENET, shards, "logger=csv", "hydra.run.dir=two",
                   "trainer.devices=2", "trainer.strategy=ddp"], tmp_path)
    assert "distributed_backend=gloo" in log and "MEMBER: 2/2" in log
    args = {"k": 2, "curves_n": 48, "shard_size": 16, "render_steps": 2, "render_draws": 1,
            "logger": None}
    one = mti.decompose("curvenet", "bn2:19@center", run_dir=tmp_path / "one", **args)
    two = json.loads((tmp_path / "two" / "decompose" / "components.json").read_text())
    assert two["n_images"] == one.record["n_images"] == 48
    assert len(two["components"]) == len(one.rows) == 4
    for a, b in zip(two["components"], one.rows):
        assert (a["part"], a["component"]) == (b["part"], b["component"])
        assert a["top_images"] == b["top_images"] and a["top_channels"] == b["top_channels"]
    for key in ("share", "explained", "render_cosine"):
        assert_reordered([a[key] for a in two["components"]], [b[key] for b in one.rows],
                         msg=key)
    factors = load_tensors(tmp_path / "two" / "decompose" / "nmf" / "nmf.safetensors")
    for name, value in one.factors.items():
        assert_reordered(factors[name], value, msg=name)
    again = mti.decompose("curvenet", "bn2:19@center", run_dir=tmp_path / "two", **args)
    assert all(s["skipped"] for s in again.record["stages"].values())
    assert again.rows == two["components"]
