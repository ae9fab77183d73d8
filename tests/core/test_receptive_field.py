"""The receptive field of a unit, on networks whose field is known from their kernels."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from mti_lightning.core.features import parse_feature
from mti_lightning.core.models import LoadedModel, freeze
from mti_lightning.core.receptive_field import Box, receptive_field


def _net(*layers: nn.Module, size: int = 32) -> LoadedModel:
    model = nn.Sequential(*layers)
    return LoadedModel("rf", freeze(model), (3, size, size), (0.5,) * 3, (0.25,) * 3, False)


def test_two_3x3_convs_see_5_px_around_the_centre():
    lm = _net(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(), nn.Conv2d(4, 4, 3, padding=1))
    rf = receptive_field(lm, parse_feature("2:1@center"))
    assert rf.theoretical == Box(14, 14, 5, 5, (32, 32))
    assert rf.effective.height <= 5 and rf.effective.top >= 14


def test_a_stride_widens_the_field_by_the_stride():
    """3x3 stride 2 then 3x3: 3 + (3 - 1) * 2 = 7 px; at (2, 5) of the 16x16 map the field
    starts at 2 * 2 - 1 - 2 = 1 (rows) and 2 * 5 - 1 - 2 = 7 (columns)."""
    lm = _net(nn.Conv2d(3, 4, 3, stride=2, padding=1), nn.ReLU(), nn.Conv2d(4, 4, 3, padding=1))
    rf = receptive_field(lm, parse_feature("2:0@(2,5)"))
    assert rf.theoretical == Box(1, 7, 7, 7, (32, 32))
    assert rf.as_dict()["theoretical_px"] == 7


def test_a_mean_unit_sees_the_whole_canvas():
    lm = _net(nn.Conv2d(3, 4, 3, padding=1))
    rf = receptive_field(lm, parse_feature("0:0@mean"))
    assert rf.theoretical.whole and rf.effective.whole


def test_a_class_token_sees_the_whole_canvas_and_a_patch_token_part_of_it(vit):
    assert receptive_field(vit, parse_feature("blocks.0:0@cls")).theoretical.whole
    patch = receptive_field(vit, parse_feature("patch_embed:0@center")).theoretical
    assert not patch.whole and patch.height == patch.width


def test_the_box_crops_and_scales_to_a_larger_canvas():
    box = Box(14, 14, 5, 5, (32, 32))
    images = torch.arange(2 * 3 * 64 * 64, dtype=torch.float32).view(2, 3, 64, 64)
    crop = box.crop(images)
    assert crop.shape == (2, 3, 10, 10)
    assert torch.equal(crop, images[..., 28:38, 28:38])
    assert box.scaled((48, 48)) == Box(21, 21, 8, 8, (48, 48))  # 21..28.5 rounded outwards


@pytest.mark.parametrize("spec", ["layer1.0.conv1:3@center", "layer2.0.conv1:3@center"])
def test_a_deeper_resnet_unit_sees_more(resnet, spec):
    """resnet18 at 64 px: the stem (7x7 s2, 3x3 max pool s2) alone gives layer1 a field of
    at least 19 px; layer2 sees more, and its effective field is inside its theoretical."""
    rf = receptive_field(resnet, parse_feature(spec))
    t, e = rf.theoretical, rf.effective
    assert t.height >= 19 and t.width >= 19
    assert t.top <= e.top and e.top + e.height <= t.top + t.height
    if spec.startswith("layer2"):
        shallow = receptive_field(resnet, parse_feature("layer1.0.conv1:3@center"))
        assert t.height > shallow.theoretical.height
