"""The closed form of E+ and E- over one convolution (+ eval BatchNorm) and the batched
backward over units both equal the core's attribution of each unit on its own."""

from __future__ import annotations

from collections.abc import Callable

import pytest
import torch
from tolerances import NETWORK, assert_reordered
from torch import nn

from mti_lightning.core.attribution import attribute
from mti_lightning.core.conv_energy import conv_unit_energies, one_conv_path
from mti_lightning.core.features import FeatureSpec, build_readout
from mti_lightning.core.models import LoadedModel, load_model
from mti_lightning.core.probes import capture
from mti_lightning.core.unit_attribution import unit_energies

SIZE = 12


def _net(make: Callable[[], nn.Conv2d], bn: bool, negative: bool = False) -> LoadedModel:
    torch.manual_seed(0)
    conv = make()
    c_in = conv.in_channels
    layers = [nn.Conv2d(3, c_in, 3, padding=1), nn.ReLU(), conv]
    if bn:
        norm = nn.BatchNorm2d(conv.out_channels)
        with torch.no_grad():
            norm.weight.uniform_(0.5, 1.5)
            norm.bias.uniform_(-0.5, 0.5)
            norm.running_mean.uniform_(-0.3, 0.3)
            norm.running_var.uniform_(0.5, 2.0)
            if negative:
                norm.weight[::2] *= -1
        layers.append(norm)
    layers.append(nn.ReLU())
    return load_model(nn.Sequential(*layers), input_size=(3, SIZE, SIZE))


def _reference(lm: LoadedModel, images, layer: str, attr: str, position):
    out = {"e_plus": [], "e_minus": [], "e_plus_l2": [], "e_minus_l2": [], "activation": []}
    for unit in range(_channels(lm, layer)):
        specs = [FeatureSpec(layer, unit, position)] * len(images)
        ref = attribute(lm, images, build_readout(lm.model, lm.input_size, specs), [attr])
        e = ref.energies[attr]
        for key in ("e_plus", "e_minus", "e_plus_l2", "e_minus_l2"):
            out[key].append(getattr(e, key))
        out["activation"].append(ref.activation)
    return {k: torch.stack(v, 1) for k, v in out.items()}


def _channels(lm: LoadedModel, layer: str) -> int:
    x = lm.normalize(torch.rand(1, *lm.input_size))
    return capture(lm.model, x, [layer])[layer].shape[1]


CASES = {
    "conv": (lambda: nn.Conv2d(4, 6, 3), False, False),
    "conv_bn_negative_scale": (lambda: nn.Conv2d(4, 6, 3, padding=1), True, True),
    "strided": (lambda: nn.Conv2d(4, 5, 3, stride=2, padding=1), True, False),
    "padded": (lambda: nn.Conv2d(4, 5, 5, padding=3, bias=False), False, False),
    "dilated": (lambda: nn.Conv2d(4, 5, 3, dilation=2, padding=2), True, True),
    "grouped": (lambda: nn.Conv2d(4, 6, 3, groups=2, padding=1), True, False),
    "depthwise": (lambda: nn.Conv2d(4, 4, 3, groups=4, padding=1), True, True),
}


@pytest.mark.parametrize("case", list(CASES))
@pytest.mark.parametrize("position", ["center", "mean"])
def test_closed_form_equals_attribution_per_unit(case: str, position: str) -> None:
    make, bn, negative = CASES[case]
    lm = _net(make, bn, negative)
    conv = lm.model.get_submodule("2")
    unit_layer = "3" if bn else "2"
    images = torch.rand(3, 3, SIZE, SIZE, generator=torch.Generator().manual_seed(1))
    example = lm.normalize(images)
    path = one_conv_path(lm.model, unit_layer, example)
    assert path is not None and path.conv == "2" and path.bn == ("3" if bn else None)
    assert path.attr_layer == "2:in"
    assert one_conv_path(lm.model, unit_layer, example, attr_layer="1") == path.__class__(
        "2", path.bn, "1"
    )
    a = capture(lm.model, example, [path.attr_layer])[path.attr_layer]
    bn_mod = lm.model.get_submodule(path.bn) if path.bn else None
    channels = torch.arange(conv.out_channels)
    got = conv_unit_energies(a, lm.model.get_submodule("2"), bn_mod, channels, position)
    want = _reference(lm, images, unit_layer, path.attr_layer, position)
    terms = float((want["e_plus"] + want["e_minus"]).max())  # closed form vs backward: reordered
    for key, value in want.items():
        assert_reordered(got[key], value, scale=terms, msg=key)
    assert negative == bool(bn_mod is not None and (bn_mod.weight < 0).any())


def test_not_one_convolution() -> None:
    lm = _net(lambda: nn.Conv2d(4, 6, 3), True)
    example = lm.normalize(torch.rand(1, 3, SIZE, SIZE))
    assert one_conv_path(lm.model, "3", example, attr_layer="0") is None  # conv, relu, conv
    assert one_conv_path(lm.model, "4", example) is None  # after the ReLU
    assert one_conv_path(lm.model, "1", example) is None  # the ReLU's output


class Residual(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 3, 3, padding=1)
        self.bn = nn.BatchNorm2d(3).eval()
        self.act = nn.ReLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.bn(self.conv(x))
        y += x  # in place: the ReLU's input is the BatchNorm's output tensor, changed
        return self.act(y)


def test_a_residual_sum_written_in_place_is_not_one_convolution() -> None:
    net = Residual()
    example = torch.rand(1, 3, SIZE, SIZE)
    assert one_conv_path(net, "act:in", example) is None
    assert one_conv_path(net, "bn", example).conv == "conv"


def test_batched_backward_equals_attribution_on_a_two_layer_path() -> None:
    lm = _net(lambda: nn.Conv2d(4, 6, 3, padding=1), True, True)
    images = torch.rand(3, 3, SIZE, SIZE, generator=torch.Generator().manual_seed(2))
    for position in ("center", "mean"):
        got = unit_energies(lm, images, "3", range(6), "0:in", position, units_per_backward=4)
        want = _reference(lm, images, "3", "0:in", position)
        terms = float((want["e_plus"] + want["e_minus"]).max())
        for key, value in want.items():
            assert_reordered(got[key], value, scale=terms, msg=key)


def test_max_position_agrees_between_closed_form_and_batched_path() -> None:
    lm = _net(lambda: nn.Conv2d(4, 6, 3, stride=2, padding=1), True, True)
    images = torch.rand(4, 3, SIZE, SIZE, generator=torch.Generator().manual_seed(3))
    a = capture(lm.model, lm.normalize(images), ["2:in"])["2:in"]
    mods = lm.model.get_submodule("2"), lm.model.get_submodule("3")
    closed = conv_unit_energies(a, *mods, torch.tensor([5, 1, 3]), "max")
    batched = unit_energies(lm, images, "3", [5, 1, 3], "2:in", "max")
    terms = float((batched["e_plus"] + batched["e_minus"]).max())
    for key, value in batched.items():
        assert_reordered(closed[key], value, scale=terms, msg=key)


def test_batched_backward_equals_attribution_on_vit_tokens() -> None:
    from timm.models.vision_transformer import VisionTransformer

    torch.manual_seed(0)
    net = VisionTransformer(
        img_size=16, patch_size=8, embed_dim=8, depth=2, num_heads=2, num_classes=3
    )
    lm = load_model(net, input_size=(3, 16, 16))
    images = torch.rand(2, 3, 16, 16, generator=torch.Generator().manual_seed(4))
    for position, spec_position in (("center", "center"), ("mean", "mean")):
        got = unit_energies(lm, images, "blocks.1", range(8), "blocks.0", position, 4)
        out = {k: [] for k in got}
        for unit in range(8):
            specs = [FeatureSpec("blocks.1", unit, spec_position)] * 2
            ref = attribute(lm, images, build_readout(lm.model, lm.input_size, specs), ["blocks.0"])
            for key in ("e_plus", "e_minus", "e_plus_l2", "e_minus_l2"):
                out[key].append(getattr(ref.energies["blocks.0"], key))
            out["activation"].append(ref.activation)
        want = {key: torch.stack(value, 1) for key, value in out.items()}
        terms = float((want["e_plus"] + want["e_minus"]).max())  # a transformer's backward
        for key, value in want.items():
            assert_reordered(got[key], value, tol=NETWORK, scale=terms, msg=key)
