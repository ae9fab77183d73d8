"""+/- inversion targets on a layer with signed activations, by hand.

The toy's attribution layer ``first`` holds the normalised pixels of a one-pixel image (signed,
in [-1, 1]); the unit is a 1x1 convolution with weights (2, -1, -2). On an image whose channels
read (0.5, 0.5, -0.5) the attribution is (1, -0.5, 1): channel 2 excites through a negative
activation and a negative weight, which a non-negative target cannot express.
"""

from __future__ import annotations

import pytest
import torch
from torch import nn

from mti_lightning.core.errors import MTIConfigError
from mti_lightning.core.features import FeatureSpec, build_readout
from mti_lightning.core.inversion import inversion_targets
from mti_lightning.core.models import LoadedModel

WEIGHTS = (2.0, -1.0, -2.0)


class _SignedLayer(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.first = nn.Identity()
        self.second = nn.Conv2d(3, 1, 1, bias=False)
        with torch.no_grad():
            self.second.weight.copy_(torch.tensor(WEIGHTS)[None, :, None, None])
        self.requires_grad_(False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.second(self.first(x))


@pytest.fixture(scope="module")
def toy():
    lm = LoadedModel("signed", _SignedLayer().eval(), (3, 1, 1), (0.5,) * 3, (0.5,) * 3, False)
    readout = build_readout(lm.model, lm.input_size, [FeatureSpec("second", 0, "mean")])
    image = torch.empty(1, 3, 1, 1)
    for c, value in enumerate((0.5, 0.5, -0.5)):  # normalised values: pixels (x - 0.5) / 0.5
        image[0, c] = value * 0.5 + 0.5
    return lm, readout, image


def _unit(values: torch.Tensor) -> list[float]:
    """The unit on layer maps ``(B, 3, 1, 1)``: its convolution."""
    return (values * torch.tensor(WEIGHTS).view(1, 3, 1, 1)).sum(1).flatten().tolist()


def test_signed_targets_keep_the_sign_of_the_activation_they_came_from(toy):
    lm, readout, image = toy
    plus, minus = inversion_targets(lm, image, readout, "first", crop=False).targets
    assert plus.flatten().tolist() == pytest.approx([1.0, 0.0, -1.0])  # A = (1, -0.5, 1)
    assert minus.flatten().tolist() == pytest.approx([0.0, 0.5, 0.0])
    # read by the unit, the + target excites through both channels, the - target inhibits
    assert _unit(torch.stack([plus, minus])) == pytest.approx([4.0, -0.5])


def test_relu_targets_lose_what_excites_through_a_negative_activation(toy):
    lm, readout, image = toy
    t = inversion_targets(lm, image, readout, "first", crop=False, match="relu_attribution")
    plus, minus = t.targets
    assert plus.flatten().tolist() == pytest.approx([1.0, 0.0, 1.0])
    assert minus.flatten().tolist() == pytest.approx([0.0, 0.5, 0.0])
    # channel 2's excitation, matched as a positive activation, now inhibits: + reads 0
    assert _unit(t.targets) == pytest.approx([0.0, -0.5])


def test_on_a_non_negative_layer_both_targets_are_the_papers(toy):
    lm, readout, _ = toy
    image = torch.tensor([0.75, 0.75, 0.6]).view(1, 3, 1, 1)  # every normalised value > 0
    signed = inversion_targets(lm, image, readout, "first", crop=False).targets
    relu = inversion_targets(lm, image, readout, "first", crop=False, match="relu_attribution")
    torch.testing.assert_close(signed, relu.targets)


def test_an_unknown_match_is_refused_with_the_valid_ones(toy):
    lm, readout, image = toy
    with pytest.raises(MTIConfigError, match="inversion match 'both'; valid: signed_attribution"):
        inversion_targets(lm, image, readout, "first", match="both")
