"""The inhibition circuit on a network built by hand, where the answer is known: the unit is
``relu(a - b)`` over two upstream channels, plus a channel that excites at one position of the
kernel and inhibits at another, plus small distractors."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from tolerances import NETWORK, assert_reordered
from torch import nn
from torch.utils.data import Dataset

import mti_lightning as mti
from mti_lightning.core.circuit import (
    ablation_masks,
    channel_table,
    expanded_weight,
    linearised,
    spearman,
)
from mti_lightning.core.features import FeatureSpec, build_readout
from mti_lightning.core.models import LoadedModel, load_model

A, B, CANCEL = 0, 1, 2  # channels of the upstream layer ``act``
TARGET = "unit:0@center"


class HandNet(nn.Module):
    """``up`` copies R, G, B into channels a, b and the cancelling one and mixes three
    distractors; ``unit`` is a 3x3 conv: +1 on a and -1 on b at the centre, +0.05 / -0.05 on
    the cancelling channel at two corners, +0.01 on each distractor; ``sign`` flips all of it
    (``sign=-1`` with ``positive``: a unit nothing inhibits)."""

    def __init__(self, positive: bool = False):
        super().__init__()
        self.up = nn.Conv2d(3, 6, 1, bias=False)
        self.act = nn.ReLU()
        self.unit = nn.Conv2d(6, 1, 3, padding=1, bias=False)
        self.out = nn.ReLU()
        with torch.no_grad():
            self.up.weight.zero_()
            for c in range(3):
                self.up.weight[c, c] = 1.0
            self.up.weight[3:, :, 0, 0] = torch.tensor(
                [[0.3, 0.3, 0.0], [0.0, 0.3, 0.3], [0.3, 0.0, 0.3]]
            )
            w = torch.zeros(1, 6, 3, 3)
            w[0, A, 1, 1] = 1.0
            w[0, B, 1, 1] = 1.0 if positive else -1.0
            if not positive:
                w[0, CANCEL, 0, 0], w[0, CANCEL, 2, 2] = 0.05, -0.05
            w[0, 3:, 1, 1] = 0.01
            self.unit.weight.copy_(w)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.out(self.unit(self.act(self.up(x))))


class Images(Dataset):
    def __init__(self, images: torch.Tensor):
        self.images = images

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, i: int) -> torch.Tensor:
        return self.images[i]


def hand(positive: bool = False) -> LoadedModel:
    return load_model(HandNet(positive).eval(), input_size=(3, 8, 8), mean=(0, 0, 0), std=(1, 1, 1))


@pytest.fixture(scope="module")
def images() -> torch.Tensor:
    return torch.rand(40, 3, 8, 8, generator=torch.Generator().manual_seed(0))


QUICK = {"visualize": False, "echo": False, "logger": None, "control_seeds": 5}


@pytest.fixture(scope="module")
def result(images, tmp_path_factory):
    out = tmp_path_factory.mktemp("circuit")
    return mti.circuit(
        hand(), TARGET, data=Images(images), layer="act", k=1, depth=2, run_dir=out, **QUICK
    )


def test_b_holds_the_inhibition_and_ranks_first(result):
    rows = {r["channel"]: r for r in result.rows}
    assert result.inhibitory == [B]
    assert result.rows[0]["channel"] == B
    assert rows[B]["share_minus"] >= 0.9
    assert rows[B]["share_minus_tense"] >= 0.9
    assert result.excitatory == [A] and rows[A]["share_plus"] >= 0.9
    assert rows[B]["expanded_weight"] == pytest.approx(-1.0, abs=1e-6)
    assert rows[A]["mean_signed"] > 0 > rows[B]["mean_signed"]
    record = json.loads((result.run_dir / "circuit" / "circuit.json").read_text())
    assert record["inhibitory"] == [B] and record["n_images"] == 40 and record["n_tense"] == 4


def test_depth_two_finds_each_channel_s_own_input(result):
    # one layer up from ``act`` is the image (``up:in``): channel b is the green input
    upstream = result.record["upstream"]
    assert set(upstream) == {str(B), str(A)}
    assert upstream[str(B)]["layer"] == "up:in"
    assert upstream[str(B)]["excitatory"][0][0] == 1 and upstream[str(A)]["excitatory"][0][0] == 0
    assert upstream[str(B)]["excitatory"][0][1] == pytest.approx(1.0)


def test_a_channel_that_excites_and_inhibits_is_flagged(result):
    flagged = {r["channel"] for r in result.rows if r["cancels"]}
    assert flagged == {CANCEL}
    rows = {r["channel"]: r for r in result.rows}
    assert rows[CANCEL]["share_minus"] > 0 and rows[CANCEL]["share_plus"] > 0


def test_ablating_the_inhibitory_set_beats_random_channels(result):
    a = result.record["ablation"]
    assert a["images"] == 4 and len(a["controls"]) == 5
    assert a["rise_inhibitory"] > 0.2
    assert a["rise_inhibitory"] > a["rise_control_mean"] + 0.1


def test_shares_equal_the_attribution_summed_over_the_data(result, images):
    # the data pass reads images as 8-bit pixels, as from files: the reference does too, so
    # that only the order of float32 sums (the pass runs on core.fastnet's copy) differs
    pixels = (images * 255).round() / 255
    attr = mti.attribute(hand(), pixels, TARGET, layers="act").maps["act"]
    minus = (-attr).clamp_min(0).sum((0, 2, 3))
    plus = attr.clamp_min(0).sum((0, 2, 3))
    rows = sorted(result.rows, key=lambda r: r["channel"])
    got_minus = torch.tensor([r["share_minus"] for r in rows])
    got_plus = torch.tensor([r["share_plus"] for r in rows])
    assert_reordered(got_minus, minus / minus.sum(), tol=NETWORK, scale=1.0)
    assert_reordered(got_plus, plus / plus.sum(), tol=NETWORK, scale=1.0)
    signed = attr.sum((2, 3)).mean(0)
    terms = float(attr.abs().sum((2, 3)).mean(0).max())
    got_signed = torch.tensor([r["mean_signed"] for r in rows])
    assert_reordered(got_signed, signed, tol=NETWORK, scale=terms)


def test_expanded_weight_is_the_kernel_through_linearised_paths():
    lm = hand()
    readout = build_readout(lm.model, lm.input_size, [FeatureSpec("unit", 0, "center")])
    w = expanded_weight(lm, readout, "act")  # one conv: the kernel at the unit's position
    assert torch.allclose(w[:, 3:6, 3:6], lm.model.unit.weight[0])
    assert float(w.abs().sum()) == pytest.approx(float(lm.model.unit.weight.abs().sum()))
    # from the image, through the ReLU (now identity): the product of both convs' weights
    w_in = expanded_weight(lm, readout, "up:in")
    expected = torch.einsum(
        "k,kc->c", lm.model.unit.weight[0, :, 1, 1], lm.model.up.weight[:, :, 0, 0]
    )
    assert_reordered(w_in[:, 4, 4], expected)
    assert not any(isinstance(m, nn.ReLU) for m in linearised(lm.model).modules())


def test_core_pieces():
    assert spearman(
        torch.tensor([1.0, 2, 3, 4]), torch.tensor([10.0, 20, 30, 40])
    ) == pytest.approx(1)
    assert spearman(torch.tensor([1.0, 2, 2, 4]), torch.tensor([4.0, 3, 3, 1])) == pytest.approx(-1)
    masks = ablation_masks(6, [1, 4], 2, [0, 1])
    assert masks.shape == (4, 6) and masks[0].all() and masks[1].tolist() == [1, 0, 1, 1, 0, 1]
    assert (masks[2:] == 0).sum(1).tolist() == [2, 2]
    plus = torch.tensor([[1.0, 0.0], [3.0, 0.0]])
    minus = torch.tensor([[0.0, 2.0], [0.0, 0.0]])
    t = channel_table(plus, minus, tense_fraction=0.5)
    assert t.share_minus.tolist() == [0.0, 1.0] and t.tense.tolist() == [0]


def test_bad_input_fails_in_one_line(images, tmp_path):
    lm, data = hand(), Images(images)
    cases = [
        ({"k": 7, "layer": "act"}, data, "circuit.k=7 but layer 'act' has 6 channels"),
        ({"k": 1, "layer": "out"}, data, "circuit.layer='out'"),
        ({"k": 1, "layer": "act"}, Images(images[:0]), "is empty|holds no images"),
        ({"k": 1, "layer": "act", "devices": 2}, data, "a circuit runs in one process"),
    ]
    for args, d, message in cases:
        with pytest.raises(mti.MTIConfigError, match=message) as err:
            mti.circuit(lm, TARGET, data=d, run_dir=tmp_path / "bad", **{**QUICK, **args})
        assert "\n" not in str(err.value)
    with pytest.raises(mti.MTIConfigError, match="target names 2 features .*one unit's") as err:
        mti.circuit(
            lm,
            ["unit:0@center", "unit:1@center"],
            data=data,
            layer="act",
            k=1,
            run_dir=tmp_path / "bad",
            **QUICK,
        )
    assert "\n" not in str(err.value)
    assert not (tmp_path / "bad").exists() or not any((tmp_path / "bad").rglob("*.json"))
    with pytest.raises(mti.MTIConfigError, match="never inhibited") as err:
        mti.circuit(
            hand(positive=True),
            TARGET,
            data=data,
            layer="act",
            k=1,
            run_dir=tmp_path / "n",
            **QUICK,
        )
    assert "\n" not in str(err.value)
    assert not (tmp_path / "n" / "circuit" / "circuit.png").exists()


def test_circuit_command_draws_curvenet_unit_with_echo(tmp_path):
    mti_cmd = str(Path(sys.executable).parent / "mti")
    args = [
        "experiment=circuit",
        "circuit.curves_n=48",
        "circuit.k=2",
        "circuit.viz_steps=2",
        "circuit.echo_images=64",
        "circuit.control_seeds=2",
        "logger=wandb",
        "hydra.run.dir=run",
    ]
    env = {
        "WANDB_MODE": "offline",
        "PYTHONWARNINGS": "ignore",
        "PATH": str(Path(sys.executable).parent),
    }
    out = subprocess.run(
        [mti_cmd, *args], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300
    )
    assert out.returncode == 0, out.stderr[-3000:]
    run = tmp_path / "run"
    record = json.loads((run / "circuit" / "circuit.json").read_text())
    assert record["unit"] == "bn2:19@center" and record["layer"] == "pool1"
    assert len(record["inhibitory"]) == 2 and len(record["channels"]) == 16
    echo = record["echo"]
    assert echo["conv"] == "conv2"
    assert echo["at_inhibiting_after"] > echo["at_inhibiting_before"]
    assert (run / "circuit" / "circuit.png").stat().st_size > 10_000
    assert len(list((run / "circuit" / "viz").glob("*.png"))) == 5
    assert list((run / "wandb").glob("offline-run-*/run-*.wandb"))
    (table,) = run.glob("wandb/offline-run-*/files/media/table/circuit_*.table.json")
    table = json.loads(table.read_text())
    assert table["columns"][:2] == ["channel", "role"] and table["columns"][-1] == "visualization"
    top = list(dict.fromkeys(record["inhibitory"] + record["excitatory"]))
    assert [row[0] for row in table["data"]] == top
