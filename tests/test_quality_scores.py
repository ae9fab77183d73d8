"""The quality benchmark's scores (benchmarks/quality_scores.py) on images with known answers."""

from __future__ import annotations

import importlib.util
import json
import math
import sys
from pathlib import Path
from types import ModuleType

import pytest
import torch
from torch import nn

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"
if not BENCHMARKS.is_dir():
    pytest.skip("no benchmarks/ beside the tests", allow_module_level=True)


def _load(name: str) -> ModuleType:
    """``benchmarks.<name>``: benchmarks/ is beside the tests, not in the installed package,
    and the checkout on sys.path would shadow the installed one, so the package is registered
    by its folder alone (its modules import each other as ``benchmarks.*``)."""
    if "benchmarks" not in sys.modules:
        package = ModuleType("benchmarks")
        package.__path__ = [str(BENCHMARKS)]  # a namespace package: the folder has no __init__
        sys.modules["benchmarks"] = package
    return importlib.import_module(f"benchmarks.{name}")


quality_scores = _load("quality_scores")
Unit = quality_scores.Unit
data_max = quality_scores.data_max
high_frequency_share = quality_scores.high_frequency_share
random_views = quality_scores.random_views
robustness = quality_scores.robustness
scores = quality_scores.scores
unit_values = quality_scores.unit_values


class _OneConv(nn.Module):
    """A 1x1 convolution: channel c of ``conv`` is ``weight[c] . pixel``."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 2, 1, bias=False)
        with torch.no_grad():
            self.conv.weight.copy_(
                torch.tensor([[1.0, 2.0, -0.5], [0.0, 0.0, 3.0]])[:, :, None, None]
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(x)


def _identity(x: torch.Tensor) -> torch.Tensor:
    return x


def test_a_low_sinusoid_has_no_high_frequency_power_and_a_checkerboard_has_all():
    y, x = torch.meshgrid(torch.arange(64.0), torch.arange(64.0), indexing="ij")
    low = torch.sin(2 * math.pi * 3 * x / 64).expand(3, 64, 64)
    checker = ((x + y) % 2).expand(3, 64, 64)
    assert high_frequency_share(low) < 1e-9
    assert high_frequency_share(checker) > 1 - 1e-9
    assert high_frequency_share(torch.full((3, 8, 8), 0.3)) == 0.0
    # a sinusoid at 0.4 of Nyquist lies below the line, at 0.6 above it
    assert high_frequency_share(torch.sin(math.pi * 0.4 * x).expand(3, 64, 64)) < 0.01
    assert high_frequency_share(torch.sin(math.pi * 0.6 * x).expand(3, 64, 64)) > 0.99


def test_a_channel_mean_on_a_constant_image_is_the_constant_times_the_weight():
    model = _OneConv()
    image = torch.full((1, 3, 16, 16), 0.4)
    mean = unit_values(model, _identity, Unit("conv", 0, "mean"), image)
    centre = unit_values(model, _identity, Unit("conv", 1, "center"), image)
    assert mean.item() == pytest.approx(0.4 * (1 + 2 - 0.5), abs=1e-6)
    assert centre.item() == pytest.approx(0.4 * 3, abs=1e-6)
    assert Unit("conv", 1, "center").target == "conv:1@center"


def test_an_image_invariant_to_crops_and_rotations_is_as_robust_as_its_value():
    model = _OneConv()
    grey = torch.full((3, 24, 24), 0.5)  # the rotation's fill is grey too
    unit = Unit("conv", 0, "mean")
    value = unit_values(model, _identity, unit, grey[None]).item()
    assert robustness(model, _identity, unit, grey, n=16, seed=3) == pytest.approx(value, abs=1e-5)


def test_views_are_seeded_and_differ_from_the_image():
    image = torch.rand(3, 32, 32, generator=torch.Generator().manual_seed(0))
    a, b = random_views(image, n=16, seed=1), random_views(image, n=16, seed=1)
    assert a.shape == (16, 3, 32, 32) and torch.equal(a, b)
    assert not torch.equal(a, random_views(image, n=16, seed=2))
    assert (a - image).abs().mean() > 0.01


def test_the_data_sets_own_max_image_scores_one_against_the_data():
    model = _OneConv()
    g = torch.Generator().manual_seed(0)
    batches = [torch.rand(8, 3, 16, 16, generator=g) for _ in range(3)]
    unit = Unit("conv", 0, "center")
    best = data_max(model, _identity, [unit], batches)[unit]
    every = torch.cat([unit_values(model, _identity, unit, b) for b in batches])
    top = torch.cat(batches)[every.argmax()]
    s = scores(model, _identity, unit, top, best, views=16)
    assert s["vs_data"] == pytest.approx(1.0, abs=1e-6)
    assert set(s) == {"value", "robust", "vs_data", "high_freq"} and 0 <= s["high_freq"] <= 1


def test_the_fitted_spectral_decay_of_power_law_noise_is_its_exponent():
    from mti_lightning.core.parameterizations import power_law_magnitude

    magnitude_decay = _load("photo_spectrum").magnitude_decay

    mag = power_law_magnitude(64, 64, 1.5)
    phase = (torch.rand(8, 64, 33, generator=torch.Generator().manual_seed(0)) * 2 - 1) * math.pi
    noise = torch.fft.irfft2(mag * torch.exp(1j * phase), s=(64, 64), norm="ortho")
    assert magnitude_decay(noise[:, None].expand(8, 3, 64, 64)) == pytest.approx(1.5, abs=0.1)


tension_scores = _load("tension_scores")


class _TwoConvs(nn.Module):
    """A 1x1 convolution from 2 channels to 1 after an identity ``first``: the attribution of
    ``second`` at its input is ``pixel channel c * weight[c]``."""

    def __init__(self) -> None:
        super().__init__()
        self.first = nn.Identity()
        self.second = nn.Conv2d(2, 1, 1, bias=False)
        with torch.no_grad():
            self.second.weight.copy_(torch.tensor([2.0, -1.0])[None, :, None, None])
        self.second.requires_grad_(False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.second(self.first(x[:, :2]))


def test_attribution_of_a_linear_unit_is_input_times_weight_and_its_tension_the_smaller_sum():
    model = _TwoConvs()
    image = torch.zeros(1, 3, 4, 4)
    image[0, 0], image[0, 1] = 0.5, 0.25  # centre: +1 (excites), -0.25 (inhibits)
    unit = Unit("second", 0, "center")
    for layer in ("second:in", "first"):
        values, maps = tension_scores.attribution(model, _identity, unit, layer, image)
        assert values.item() == pytest.approx(0.75)
        expected = torch.zeros(1, 2, 4, 4)
        expected[0, 0, 2, 2], expected[0, 1, 2, 2] = 1.0, -0.25
        assert torch.allclose(maps, expected)
        e_plus, e_minus = tension_scores.energies(maps)
        assert (e_plus.item(), e_minus.item()) == pytest.approx((1.0, 0.25))
        assert tension_scores.tension(maps).item() == pytest.approx(0.25)
    # the mean spreads d f / d a over the 16 positions
    _, maps = tension_scores.attribution(
        model, _identity, Unit("second", 0, "mean"), "first", image
    )
    assert tension_scores.tension(maps).item() == pytest.approx(0.25)


def test_cosine_of_a_map_with_itself_its_negative_and_an_orthogonal_map():
    a = torch.tensor([[1.0, 0.0], [2.0, 0.0]])
    cosine = tension_scores.cosine
    assert cosine(a, 3 * a) == pytest.approx(1.0)
    assert cosine(a, -a) == pytest.approx(-1.0)
    assert cosine(a, torch.tensor([[0.0, 1.0], [0.0, 5.0]])) == pytest.approx(0.0)
    assert cosine(a, torch.zeros(2, 2)) == 0.0


def test_inversions_that_keep_only_their_part_raise_lower_and_match_it():
    model = _TwoConvs()
    unit = Unit("second", 0, "center")
    image = torch.full((3, 4, 4), 0.5)  # grey: 2 * 0.5 - 0.5 = 0.5 at every position
    plus, minus = image.clone(), image.clone()
    plus[1] = 0.0  # only the excitatory channel left: 1.0 > 0.5
    minus[0] = 0.0  # only the inhibitory one: -0.5 < 0.5
    s = tension_scores.inversion_scores(model, _identity, unit, "second:in", image, plus, minus)
    assert s["grey"] == pytest.approx(0.5)
    assert (s["plus_value"], s["minus_value"]) == pytest.approx((1.0, -0.5))
    assert s["plus_raises"] and s["minus_lowers"]
    assert s["cos_plus"] == pytest.approx(1.0) and s["cos_minus"] == pytest.approx(1.0)
    assert (s["spatial_cos_plus"], s["spatial_cos_minus"]) == pytest.approx((1.0, 1.0))
    # the source's own A at the centre is (1, -0.5): its cosine with (1, 0) and with (0, -0.5)
    assert s["source_cos_plus"] == pytest.approx(1 / math.sqrt(1.25))
    assert s["source_cos_minus"] == pytest.approx(0.5 / math.sqrt(1.25))
    # swapped, each inversion holds the other part: wrong sign, orthogonal maps, and on the
    # heatmap (the sum over channels) the opposite sign
    s = tension_scores.inversion_scores(model, _identity, unit, "second:in", image, minus, plus)
    assert not s["plus_raises"] and not s["minus_lowers"]
    assert s["cos_plus"] == pytest.approx(0.0) and s["cos_minus"] == pytest.approx(0.0)
    assert (s["spatial_cos_plus"], s["spatial_cos_minus"]) == pytest.approx((-1.0, -1.0))


quality_report = _load("quality_report")


def _mti_run(setting: str, overrides: list[str], rate: float, extra: dict) -> dict:
    row = {
        "setting": setting,
        "units": 18,
        "over_data_ge_1": rate,
        "over_data_median": 1.1,
        "signs_ok": 0.5,
        "plus_raises": 0.75,
        "minus_lowers": 0.75,
        "cos_plus_median": 0.12,
        "cos_minus_median": 0.09,
        "cos_ge_08": 0.0,
        "cpu_s_per_unit": 35.0,
        "per_unit": [],
        **extra,
    }
    return {
        "machine": {"date": "2026-12-07T05:29:04+00:00"},
        "settings": {"draws": 2, "settings": {setting: overrides}},
        "rows": [row],
    }


def test_the_report_puts_the_runs_before_the_change_first_and_says_each_miss(tmp_path):
    before = _mti_run("before", ["search.inversions.match=relu_attribution"], 0.83, {})
    after = _mti_run(
        "default",
        [],
        0.9,
        {
            "spatial_cos_plus_median": 0.81,
            "spatial_cos_minus_median": 0.7,
            "spatial_cos_ge_08": 0.5,
            "source_cos_plus_median": 0.72,
            "source_cos_minus_median": 0.69,
            "robust_over_data_ge_1": 0.95,
        },
    )
    (tmp_path / "quality_mti_before.json").write_text(json.dumps(before))
    (tmp_path / "quality_mti.json").write_text(json.dumps(after))
    rows = quality_report.mti_rows(tmp_path)
    assert [r["setting"] for r in rows] == ["before", "default"]
    old, new = quality_report.rates_table(rows)[2:]
    assert "`search.inversions.match=relu_attribution`" in old and "| 1.10 | n/a | 50% |" in old
    assert "| n/a | n/a | n/a |" in old
    assert "(schema defaults)" in new and "| 0.81, 0.70 | 50% | 0.72, 0.69 |" in new
    assert "| 1.10 | 95% | 50% |" in new
    lines = quality_report.misses(rows)
    assert "- `before`: MTI tension >= tensest crop's: 83% (target 90%): missed by 7 points." in lines
    assert "- `default`: MTI tension >= tensest crop's: 90% (target 90%): met." in lines
    why = quality_report.reasons(rows)
    assert len(why) == 1 and "median cosine of 0.72 (+) and 0.69 (-)" in why[0]  # signs all right
    assert "0.81 and 0.70 on the spatial heatmap" in why[0] and "50% of them" in why[0]
    # with a run without transforms beside it, why the defaults keep them
    exact = _mti_run("no_transforms", ["transform.jitter=0"], 1.0, {"robust_over_data_ge_1": 0.5})
    wrong = {"unit": "blocks.2:16@mean", "grey": -15.0, "plus_value": 7.0, "minus_value": -3.2}
    rows[1]["per_unit"] = [{**wrong, "plus_raises": True, "minus_lowers": False}]
    why = quality_report.reasons([*rows, exact["rows"][0]])
    assert "1 of 18 units have an inversion on the wrong side of grey" in why[1]
    assert "(blocks.2:16@mean: grey -15, + 7, - -3.2)" in why[1]
    assert "(`no_transforms`) 100% of the searches" in why[2] and "only 50% do" in why[2]
    assert "against 95% at the defaults" in why[2] and "(2 of 18 units end below" in why[2]
    # with the unit's floor measured, the page says whether any Fourier image goes below grey
    floor = {
        "blocks.2:16@mean": {
            "grey": -15.0,
            "crops_min": -7.49,
            "crops_below_grey": 0.0,
            "neg_fourier": -19.3,
            "neg_pixel": -30.4,
        }
    }
    why = quality_report.reasons([*rows, exact["rows"][0]], floor)
    assert why[2].startswith("  - blocks.2:16@mean: 0.0% of the photo crops lie below grey")
    assert "(lowest -7.49)" in why[2] and "reaches -19.3 with the default Fourier" in why[2]
    assert "(lower than grey) and -30.4 with pixels" in why[2]
    assert "(`no_transforms`) 100% of the searches" in why[3]


def test_the_other_networks_rows_are_named_by_their_model_and_the_before_run_is_not_one(
    tmp_path,
):
    run = _mti_run("default", [], 0.89, {})
    run["settings"]["model"] = "efficientnet_lite1_imagenet"
    (tmp_path / "quality_mti_lite1.json").write_text(json.dumps(run))
    before = _mti_run("before", [], 0.83, {})
    (tmp_path / "quality_mti_before.json").write_text(json.dumps(before))
    rows = quality_report.network_rows(tmp_path)
    assert [r["setting"] for r in rows] == ["efficientnet_lite1_imagenet: default"]
    line = quality_report.misses(rows)[0]
    assert line == (
        "- `efficientnet_lite1_imagenet: default`: MTI tension >= tensest crop's: 89% "
        "(target 90%): missed by 1 point."
    )
