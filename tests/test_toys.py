"""Toy models of superposition: data, training, and tension measured on a planted toy.

The planted toy (``AbsToy(n=2, m=3)``, weights set by hand) has one superposed hidden unit,
``h0 = relu(x0 - 0.5 x1)``, shared by both features, plus ``h1 = relu(-x0)`` and
``h2 = relu(x1)``; ``out0 = h0 + h1 - h2`` and ``out1 = h2``. Its energies, worked out by hand:

- ``hidden:0`` at the input, ``A = (x0, -0.5 x1)``: single inputs ``(+-1, 0)``, ``(0, +-1)``
  give ``E+ = 1, 0, 0, 0.5`` and ``E- = 0, 1, 0.5, 0`` (tension 0); pair inputs ``(+-1, +-1)``
  give tension 0.5 on ``(1, 1)`` and ``(-1, -1)``, 0 otherwise; the best in the box is 0.5.
- ``out:0`` at the input, ``A = x * (W2 diag(h > 0) W1)``: singles ``E+ = 1, 1, 0, 0.5`` and
  ``E- = 0, 0, 1, 0``; pairs ``(1, 1) -> A = (1, -1.5)``, ``(1, -1) -> (1, 0.5)``,
  ``(-1, 1) -> (1, -1)``, ``(-1, -1) -> (1, 0)``: tensions 1, 0, 1, 0; the box optimum is 1.
- ``out:0`` at the hidden layer, ``A = (h0, h1, -h2)``: singles ``(1,0,0)``, ``(0,1,0)``,
  ``(0,0,-1)``, ``(0.5,0,0)`` (tension 0); pairs ``(0.5,0,-1)``, ``(1.5,0,0)``, ``(0,1,-1)``,
  ``(0,1,0)``: tensions 0.5, 0, 1, 0; the box optimum is 1.
"""

from __future__ import annotations

import csv
import io

import pytest
import torch

from mti_lightning.core.zoo.toys import AbsToy, XorToy, build_toy
from mti_lightning.world.toy_analysis import (
    COLUMNS,
    HIDDEN_LAYER,
    INPUT_LAYER,
    analyze_toy,
    probe_inputs,
    run_toy,
    table_csv,
    table_text,
)
from mti_lightning.world.toy_data import SparseToyStream, sample_abs, sample_xor
from mti_lightning.world.train_toys import ToyConfig, load_toy, save_toy, train_toy


def test_abs_data_is_sparse_uniform_and_seeded() -> None:
    x, y = sample_abs(40_000, 6, 0.05, torch.Generator().manual_seed(0))
    assert x.shape == (40_000, 6)
    assert abs((x != 0).float().mean().item() - 0.05) < 0.005
    assert x.abs().max() <= 1 and x.min() < -0.9 and x.max() > 0.9
    assert torch.equal(y, x.abs())
    x2, _ = sample_abs(40_000, 6, 0.05, torch.Generator().manual_seed(0))
    x3, _ = sample_abs(40_000, 6, 0.05, torch.Generator().manual_seed(1))
    assert torch.equal(x, x2) and not torch.equal(x, x3)
    stream = SparseToyStream("abs", 6, 0.05, 64, seed=3)
    first, again = next(iter(stream)), next(iter(stream))
    assert torch.equal(first[0], again[0])


def test_xor_data_pairs_are_nonzero_patterns_with_xor_target() -> None:
    x, y = sample_xor(40_000, 6, 0.05, torch.Generator().manual_seed(0))
    pairs = x.view(-1, 6, 2)
    active = pairs.sum(-1) > 0
    assert abs(active.float().mean().item() - 0.05) < 0.005
    assert set(x.unique().tolist()) == {0.0, 1.0}
    assert torch.equal(y, (pairs[..., 0] != pairs[..., 1]).float())
    patterns = {tuple(p) for p in pairs[active].tolist()}
    assert patterns == {(0.0, 1.0), (1.0, 0.0), (1.0, 1.0)}


def test_toys_name_every_op_and_reject_unknown_kind() -> None:
    names = {n for n, _ in build_toy("xor", 6, 8).named_modules()}
    assert {"hidden", "hidden_act", "out", "out_act"} <= names
    assert XorToy(6, 8).hidden.bias is not None and AbsToy(6, 8).hidden.bias is None
    with pytest.raises(ValueError, match="unknown toy kind"):
        build_toy("sin", 6, 8)
    with pytest.raises(ValueError, match="does not match the model"):
        analyze_toy(AbsToy(6, 8), "xor")


def test_probe_inputs_cover_all_single_and_pair_patterns() -> None:
    assert probe_inputs("abs", 6, 1).shape == (12, 6)
    assert probe_inputs("abs", 6, 2).shape == (60, 6)
    assert probe_inputs("xor", 6, 1).shape == (18, 12)
    assert probe_inputs("xor", 6, 2).shape == (135, 12)


def test_abs_training_beats_trivial_model_and_round_trips(tmp_path) -> None:
    """Threshold: best-of-4 held-out loss below 10% of the all-zero output's loss."""
    model, info = train_toy("abs", steps=200, seeds=4)
    assert info["loss"] < 0.1 * info["zero_loss"], info
    assert info["loss"] == min(info["seed_losses"])
    save_toy(model, info, tmp_path)
    cfg = ToyConfig(**info["config"])
    loaded, info2 = load_toy(tmp_path, "abs", cfg)
    assert info2 == info
    x = probe_inputs("abs", 6, 2)
    assert torch.equal(loaded(x), model(x))
    assert load_toy(tmp_path, "abs", ToyConfig(steps=201)) is None


@pytest.fixture(scope="module")
def planted():
    model = AbsToy(2, 3)
    with torch.no_grad():
        model.hidden.weight.copy_(torch.tensor([[1.0, -0.5], [-1.0, 0.0], [0.0, 1.0]]))
        model.out.weight.copy_(torch.tensor([[1.0, 1.0, -1.0], [0.0, 0.0, 1.0]]))
        model.out.bias.zero_()
    model.requires_grad_(False)
    analysis = analyze_toy(model, "abs", restarts=8, mti_steps=150, seed_from_data=False)
    return model, analysis


def _row(analysis, unit, layer, inputs):
    (row,) = [
        r for r in analysis.rows if (r["unit"], r["layer"], r["inputs"]) == (unit, layer, inputs)
    ]
    return row


def _assert_points(analysis, unit, layer, inputs, expected) -> None:
    """The measured (E+, E-) of every probe input of ``unit`` equal the hand values."""
    got = [
        (p["e_plus"], p["e_minus"])
        for p in analysis.points
        if (p["unit"], p["layer"], p["inputs"]) == (unit, layer, inputs)
    ]
    torch.testing.assert_close(torch.tensor(got), torch.tensor(expected, dtype=torch.float32))


def test_planted_energies_match_hand_computation(planted) -> None:
    _, a = planted
    approx = pytest.approx
    _assert_points(a, "hidden:0", INPUT_LAYER, "single", [(1, 0), (0, 1), (0, 0.5), (0.5, 0)])
    _assert_points(a, "hidden:0", INPUT_LAYER, "pair", [(1, 0.5), (1.5, 0), (0, 1.5), (0.5, 1)])
    _assert_points(a, "out:0", INPUT_LAYER, "single", [(1, 0), (1, 0), (0, 1), (0.5, 0)])
    _assert_points(a, "out:0", INPUT_LAYER, "pair", [(1, 1.5), (1.5, 0), (1, 1), (1, 0)])
    _assert_points(a, "out:0", HIDDEN_LAYER, "single", [(1, 0), (1, 0), (0, 1), (0.5, 0)])
    _assert_points(a, "out:0", HIDDEN_LAYER, "pair", [(0.5, 1), (1.5, 0), (1, 1), (1, 0)])
    row = _row(a, "out:0", INPUT_LAYER, "pair")
    assert row["mean_tension"] == approx(0.5) and row["max_ratio"] == approx(1.0)
    assert row["mean_act"] == approx(0.5) and row["superposed"] == "yes"
    assert row["own_max_tension"] == approx(1.0) and row["other_max_tension"] == "-"
    assert _row(a, "hidden:0", INPUT_LAYER, "pair")["own_max_tension"] == "-"
    assert _row(a, "out:1", INPUT_LAYER, "pair")["superposed"] == "no"


@pytest.mark.parametrize(
    "unit,layer,pair_max",
    [("hidden:0", INPUT_LAYER, 0.5), ("out:0", INPUT_LAYER, 1.0), ("out:0", HIDDEN_LAYER, 1.0)],
)
def test_planted_tension_zero_on_single_positive_on_pair_and_mti_reaches_it(
    planted, unit, layer, pair_max
) -> None:
    _, a = planted
    single, pair, mti = (_row(a, unit, layer, k) for k in ("single", "pair", "mti"))
    assert single["max_tension"] == 0.0
    assert pair["max_tension"] == pytest.approx(pair_max)
    assert mti["max_tension"] >= pair["max_tension"] - 1e-4
    assert mti["max_tension"] <= pair_max + 1e-4  # the hand-computed optimum over the box


def test_table_outputs(planted) -> None:
    _, a = planted
    rows = list(csv.DictReader(io.StringIO(table_csv(a.rows))))
    assert tuple(rows[0]) == COLUMNS and len(rows) == len(a.rows) == 3 * 3 + 2 * 6
    assert {r["inputs"] for r in rows} == {"single", "pair", "mti"}
    assert all(float(r["max_e_plus"]) >= 0 and float(r["max_e_minus"]) >= 0 for r in rows)
    assert all(0 <= float(r["max_ratio"]) <= 1 for r in rows)
    text = table_text(a.rows)
    assert text.splitlines()[0].split() == list(COLUMNS)


def test_run_toy_writes_outputs_and_resumes(tmp_path) -> None:
    cfg = ToyConfig(kind="xor", steps=30, seeds=1)
    run_toy(tmp_path, cfg, restarts=2, mti_steps=5)
    weights = tmp_path / "toy_xor.safetensors"
    stamp = weights.stat().st_mtime_ns
    run_toy(tmp_path, cfg, restarts=2, mti_steps=5)
    assert weights.stat().st_mtime_ns == stamp  # reloaded, not retrained
    for suffix in (".csv", ".txt"):
        assert (tmp_path / f"toy_xor_tension{suffix}").stat().st_size > 0
    assert (tmp_path / "toy_xor_tension.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert not list(tmp_path.glob(".*tmp"))
