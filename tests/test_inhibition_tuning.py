"""Inhibition measured as inhibition, on synthetic units whose answer is known: one inhibited
by the orthogonal orientation, one whose E- ignores orientation (orientation-blind)."""

from __future__ import annotations

import torch

from mti_lightning.world.curves import ORIENTATIONS_DEG
from mti_lightning.world.inhibition_tuning import background_images, circular_mean_deg, measure


def _unit(inhibited: bool):
    gen = torch.Generator().manual_seed(1)
    labels = torch.arange(400) % 8
    deg = torch.tensor(ORIENTATIONS_DEG)[labels]
    near = torch.cos(torch.deg2rad(deg - 45.0) * 2)  # preference 45 deg, 1 there, -1 at 135
    noise = 0.1 * torch.randn(400, generator=gen)
    e_minus = (1.0 + (-near).clamp_min(0) if inhibited else torch.ones(400)) + noise.abs()
    activation = near.clamp_min(0) * 2 - (e_minus if inhibited else 0.5) + noise
    # four upstream channels tuned to 45, 135, 0 and 90 deg; the unit's E- comes from 135
    pref = torch.tensor([45.0, 135.0, 0.0, 90.0])
    minus = torch.zeros(400, 4)
    minus[:, 1 if inhibited else 2] = e_minus
    plus = torch.zeros(400, 4)
    plus[:, 0] = activation.clamp_min(0)
    background = torch.zeros(50) if inhibited else torch.full((50,), -2.0)
    return activation, e_minus, labels, minus, plus, pref, torch.ones(4), background


def test_an_orthogonally_inhibited_unit_stands_out_of_the_blind_baseline():
    m = measure(*_unit(True), permutations=100)
    assert m.preferred_deg == 45.0 and m.e_minus_deg == 135.0 and m.e_minus_offset == 90.0
    assert m.e_minus_p < 0.05 and m.e_minus_selectivity > 3 * m.e_minus_selectivity_blind
    assert m.e_minus_far_blind < 0.7
    assert m.carriers_offset == 90.0 and m.carriers_offset_blind < 80
    assert m.excitors_offset == 0.0
    assert m.suppression > 1 and m.suppression_p < 0.05 and m.suppressed_deg == 135.0


def test_an_orientation_blind_unit_is_not_called_inhibited():
    m = measure(*_unit(False), permutations=100)
    # its tuning minimum still lies 90 deg from the preference: shape alone
    assert m.tuning_min_offset >= 67.5
    assert m.e_minus_p > 0.05
    assert m.suppression < 0  # never below its response to the background


def test_helpers():
    mean = circular_mean_deg(torch.tensor([170.0, 10.0]), torch.ones(2))
    assert min(mean, 180 - mean) < 1e-6
    bg = background_images(3, 7)
    assert bg.shape == (3, 3, 64, 64) and 0 <= float(bg.min()) and float(bg.max()) <= 1


def test_the_comparison_reports_measured_inhibition_beside_the_blind_values():
    from mti_lightning.journeys.compare.findings import inhibition_line, inhibition_summary

    m = measure(*_unit(True), permutations=50).as_dict()
    blind = measure(*_unit(False), permutations=50).as_dict()
    rows = [{**m, "inhibition_offset_deg": 90.0}, {**blind, "inhibition_offset_deg": 67.5}]
    summary = inhibition_summary(rows)
    assert summary["units"] == 2 and summary["tuning_min_far"] == 2
    assert summary["e_minus_selective"] == 1 and summary["suppressed"] == 1
    line = inhibition_line({"model": "m", "inhibition": summary})
    assert "tuning minimum >= 67.5 deg from preference in 2" in line
    assert "any single-peaked curve: 2, by shape" in line
    assert "E- orientation-selective in 1" in line
    assert inhibition_summary([]) is None
