"""The CurveNet report: tuning curves from real curve images, most-tuned units first."""

from __future__ import annotations

import torch

from mti_lightning.world.curvenet_report import run_report
from mti_lightning.world.tuning import orientation_tuning, tuning_strength, tuning_table


def test_tuning_table_and_strength_on_known_values():
    labels = torch.arange(8).repeat(10)
    tuned = torch.cos(labels.float() * torch.pi / 4)
    flat = torch.randn(80, generator=torch.Generator().manual_seed(0))
    values = torch.stack([tuned, flat], 1)
    curves = tuning_table(values, labels)
    assert torch.allclose(curves[0], torch.cos(torch.arange(8).float() * torch.pi / 4))
    strength = tuning_strength(curves, values, labels)
    assert strength[0] > 0.99 and strength[1] < 0.3


def test_orientation_tuning_finds_preference_and_inhibition():
    """The one tuning function (the report's and the comparison's): a channel peaking at 45 deg
    and lowest at 135 deg is tuned with its inhibition 90 deg away; a flat one is not tuned."""
    labels = torch.arange(8).repeat(10)
    peaked = torch.cos((labels.float() - 2) * torch.pi / 4)
    flat = torch.randn(80, generator=torch.Generator().manual_seed(0))
    t = orientation_tuning(torch.stack([peaked, flat], 1), labels)
    assert t.tuned.tolist() == [True, False]
    assert float(t.preferred_deg[0]) == 45.0 and float(t.inhibition_deg[0]) == 135.0
    assert float(t.offset_deg[0]) == 90.0 and 0 <= float(t.offset_deg[1]) <= 90


def test_report_writes_text_and_figure(tmp_path):
    text = run_report(tmp_path, units=2, steps=3, n_images=160)
    assert (tmp_path / "curvenet_report.png").stat().st_size > 10_000
    lines = (tmp_path / "curvenet_report.txt").read_text().splitlines()
    assert lines[0].startswith("CurveNet bn2") and len(lines) == 2 + 2 + 1
    assert text.splitlines()[2].split()[0].isdigit()
