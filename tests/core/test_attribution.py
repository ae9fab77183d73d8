"""Attribution ``A = act * df/dact``: completeness on linear paths, batching, energies, boxes."""

from __future__ import annotations

import pytest
import torch
from tolerances import NETWORK, assert_reordered
from torch import nn

from mti_lightning.core.attribution import (
    attribute,
    crop_bounds,
    energies,
    receptive_field,
)
from mti_lightning.core.errors import MTIConfigError
from mti_lightning.core.features import build_readout, parse_feature
from mti_lightning.core.models import LoadedModel


def _readout(lm: LoadedModel, *texts: str):
    return build_readout(lm.model, lm.input_size, [parse_feature(t) for t in texts])


def test_single_conv_without_bias_sums_to_feature(resnet: LoadedModel, images) -> None:
    """``act1 -> conv2`` is linear and resnet convs have no bias: ``sum(A) == f``."""
    assert resnet.model.layer1[0].conv2.bias is None
    readout = _readout(resnet, "layer1.0.conv2:5@center", "layer1.0.conv2:9@(3,11)")
    result = attribute(resnet, images(2), readout, ["layer1.0.act1"])
    a = result.maps["layer1.0.act1"]
    assert a.shape == (2, 64, 16, 16)
    f = result.activation
    assert f.abs().min() > 1e-2
    # the conv's sum and the map's, in other orders, of terms of size |A|
    assert_reordered(a.flatten(1).sum(1), f, scale=float(a.flatten(1).abs().sum(1).max()))


def test_linear_with_bias_sums_to_feature_minus_bias(resnet: LoadedModel, images) -> None:
    """``fc:in -> fc`` is one linear layer with a bias: ``sum(A) + bias[c] == f``."""
    bias = resnet.model.fc.bias
    readout = _readout(resnet, "fc:5", "fc:123")
    result = attribute(resnet, images(2), readout, ["fc:in"])
    a = result.maps["fc:in"]
    assert a.shape == (2, 512)
    expected = result.activation - bias[[5, 123]]
    assert bias[[5, 123]].abs().min() > 1e-3
    assert_reordered(a.sum(1), expected, scale=float(a.abs().sum(1).max()))


def test_conv_with_bias_sums_to_feature_minus_bias(wrap) -> None:
    torch.manual_seed(3)
    net = nn.Sequential(nn.Conv2d(3, 6, 3), nn.ReLU(), nn.Conv2d(6, 4, 3, bias=True))
    nn.init.normal_(net[2].bias)
    lm = wrap(net)
    readout = _readout(lm, "2:1@(2,3)", "2:3@mean")
    result = attribute(lm, torch.rand(2, 3, 16, 16), readout, ["1", "1:in"])
    sums = result.maps["1"].flatten(1).sum(1)
    terms = float(result.maps["1"].flatten(1).abs().sum(1).max())
    assert_reordered(sums + net[2].bias[[1, 3]], result.activation, scale=terms)
    # across a ReLU act * grad is unchanged: the cut-off units have zero gradient before it
    # and zero value after it
    assert (result.maps["1"] != 0).any()
    torch.testing.assert_close(result.maps["1:in"], result.maps["1"])


def test_batch_equals_image_by_image(resnet: LoadedModel, images) -> None:
    texts = ["layer2.0.conv1:3@center", "layer3.0.bn1:17@mean", "layer2.0.conv1:8@(1,6)"]
    x = images(3)
    layers = ["layer1.1.act2", "layer1.0.act1:in"]
    batch = attribute(resnet, x, _readout(resnet, *texts), layers)
    for k, text in enumerate(texts):
        single = attribute(resnet, x[k : k + 1], _readout(resnet, text), layers)
        # a batch of three and of one pick other kernel blockings: the network reordered
        assert_reordered(batch.activation[k : k + 1], single.activation, tol=NETWORK)
        for layer in layers:
            assert batch.maps[layer][k].abs().sum() > 0
            assert_reordered(batch.maps[layer][k : k + 1], single.maps[layer], tol=NETWORK)
            assert_reordered(
                batch.energies[layer].e_plus[k : k + 1],
                single.energies[layer].e_plus,
                tol=NETWORK,
            )


def test_transformer_attribution(vit: LoadedModel) -> None:
    readout = _readout(vit, "blocks.3:5@cls", "blocks.4:2@mean")
    x = torch.rand(2, *vit.input_size)
    result = attribute(vit, x, readout, ["blocks.1", "blocks.2.mlp.act:in"])
    a = result.maps["blocks.1"]
    assert a.shape == (2, 101, 64)
    hidden = vit.model.blocks[2].mlp.fc1.out_features
    assert result.maps["blocks.2.mlp.act:in"].shape == (2, 101, hidden)
    for m in result.maps.values():
        assert torch.isfinite(m).all()
        assert (m.flatten(1).abs().sum(1) > 0).all()
    e = result.energies["blocks.1"]
    assert (e.e_plus > 0).all() and (e.e_minus > 0).all()


def test_attribution_layer_must_be_upstream(resnet: LoadedModel, images) -> None:
    with pytest.raises(MTIConfigError, match="does not lie upstream"):
        attribute(resnet, images(1), _readout(resnet, "layer2.0.conv1:0"), ["layer3.0.conv1"])


def test_one_feature_per_image(resnet: LoadedModel, images) -> None:
    with pytest.raises(MTIConfigError, match="2 images but 1 features"):
        attribute(resnet, images(2), _readout(resnet, "layer2.0.conv1:0"), ["layer1.0.act1"])


def test_energies_on_hand_made_tensor() -> None:
    a = torch.tensor([[1.0, -2.0, 3.0, -4.0], [0.0, 0.0, 0.0, 0.0], [2.0, 0.0, 5.0, 0.0]])
    e = energies(a.view(3, 2, 2))
    torch.testing.assert_close(e.e_plus, torch.tensor([4.0, 0.0, 7.0]))
    torch.testing.assert_close(e.e_minus, torch.tensor([6.0, 0.0, 0.0]))
    torch.testing.assert_close(e.e_plus_l2, torch.tensor([10**0.5, 0.0, 29**0.5]))
    torch.testing.assert_close(e.e_minus_l2, torch.tensor([20**0.5, 0.0, 0.0]))
    torch.testing.assert_close(e.tension, torch.tensor([4.0, 0.0, 0.0]))
    torch.testing.assert_close(e.ratio, torch.tensor([4 / 6, 0.0, 0.0]))
    assert set(e.as_dict()) == {
        "e_plus",
        "e_minus",
        "e_plus_l2",
        "e_minus_l2",
        "tension",
        "tension_ratio",
    }


def test_crop_bounds_on_hand_made_map() -> None:
    a = torch.zeros(3, 2, 8, 10)
    a[0, 0, 2:5, 1:6] = 1.0
    a[0, 1, 3, 7] = -0.5  # the negative side counts too
    a[0, 1, 7, 9] = 1e-4  # below 1% of the maximum: ignored
    a[1, 1, 6, 0] = -2.0
    assert crop_bounds(a).tolist() == [[2, 5, 1, 8], [6, 7, 0, 1], [0, 8, 0, 10]]
    assert crop_bounds(a, frac=1e-5)[0].tolist() == [2, 8, 1, 10]
    with pytest.raises(MTIConfigError, match="need maps"):
        crop_bounds(torch.zeros(2, 5))


def _box_size(box: torch.Tensor) -> tuple[int, int]:
    h0, h1, w0, w1 = box.tolist()
    return h1 - h0, w1 - w0


def test_receptive_field_is_small_and_grows_with_depth(resnet: LoadedModel) -> None:
    readout = _readout(
        resnet, "layer1.0.conv1:3@center", "layer2.0.conv1:3@center", "layer3.0.conv1:3@center"
    )
    boxes = receptive_field(resnet, readout, n_samples=2)
    early, mid, deep = boxes
    h, w = _box_size(early)
    # stem conv 7x7/2, max-pool 3x3/2, then a 3x3 conv at stride 4: 19 input pixels across
    assert 9 <= h <= 19 and 9 <= w <= 19
    h0, h1, w0, w1 = early.tolist()
    assert h0 <= 32 < h1 and w0 <= 32 < w1  # around the unit's position (8, 8) * stride 4
    assert _box_size(mid)[0] > h and _box_size(mid)[1] > w
    assert _box_size(deep)[0] > _box_size(mid)[0] and _box_size(deep)[1] > _box_size(mid)[1]
