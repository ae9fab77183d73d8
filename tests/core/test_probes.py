"""Layer probes: outputs and inputs by name, safety against in-place ops, stop-forward, errors."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from mti_lightning.core.errors import MTIConfigError
from mti_lightning.core.models import LoadedModel
from mti_lightning.core.probes import LayerRef, capture, layer_shapes


def _stem(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    return model.maxpool(model.act1(model.bn1(model.conv1(x))))


def test_layer_ref_parse_and_str() -> None:
    assert LayerRef.parse("layer3.1.bn1") == LayerRef("layer3.1.bn1", "out")
    assert LayerRef.parse("layer4.0.act1:in") == LayerRef("layer4.0.act1", "in")
    assert LayerRef.parse("layer4.0.act1:out") == LayerRef("layer4.0.act1", "out")
    assert str(LayerRef("layer4.0.act1", "in")) == "layer4.0.act1:in"
    assert str(LayerRef.parse("blocks.3")) == "blocks.3"


def test_capture_output_and_input(resnet: LoadedModel, images) -> None:
    m = resnet.model
    x = resnet.normalize(images(2))
    got = capture(m, x, ["layer1.0.conv1", "layer1.0.act1:in", "layer1.0:in"])
    with torch.no_grad():
        stem = _stem(m, x)
        conv1 = m.layer1[0].conv1(stem)
        bn1 = m.layer1[0].bn1(conv1)
    assert set(got) == {"layer1.0.conv1", "layer1.0.act1:in", "layer1.0:in"}
    torch.testing.assert_close(got["layer1.0:in"], stem)
    torch.testing.assert_close(got["layer1.0.conv1"], conv1)
    torch.testing.assert_close(got["layer1.0.act1:in"], bn1)
    assert (bn1 < 0).any()  # a pre-activation: the ReLU has not clipped it


def test_inplace_add_does_not_change_captured_bn2(resnet: LoadedModel, images) -> None:
    """timm's BasicBlock does ``x = bn2(...); x += shortcut``: the probe must keep bn2's value."""
    m = resnet.model
    block = m.layer1[0]
    x = resnet.normalize(images(2))
    stopped = capture(m, x, ["layer1.0.bn2"])["layer1.0.bn2"]
    continued = capture(m, x, ["layer1.0.bn2", "layer2.0.conv1"])["layer1.0.bn2"]
    with torch.no_grad():
        stem = _stem(m, x)
        by_hand = block.bn2(block.conv2(block.act1(block.bn1(block.conv1(stem)))))
    assert by_hand.abs().mean() > 0.1  # bn2 carries signal (BNs randomised in the fixture)
    torch.testing.assert_close(stopped, by_hand)
    torch.testing.assert_close(continued, by_hand)

    # the naive probe (keep the output tensor itself) really is overwritten by the add
    naive = {}
    handle = block.bn2.register_forward_hook(lambda _m, _a, out: naive.setdefault("bn2", out))
    try:
        with torch.no_grad():
            m(x)
    finally:
        handle.remove()
    torch.testing.assert_close(naive["bn2"], by_hand + stem)


def test_act2_input_is_bn2_plus_shortcut(resnet: LoadedModel, images) -> None:
    m = resnet.model
    x = resnet.normalize(images(2))
    got = capture(m, x, ["layer1.0:in", "layer1.0.bn2", "layer1.0.act2:in", "layer1.0.act2"])
    pre = got["layer1.0.bn2"] + got["layer1.0:in"]
    torch.testing.assert_close(got["layer1.0.act2:in"], pre)
    torch.testing.assert_close(got["layer1.0.act2"], pre.clamp_min(0))


def test_gradients_flow_through_captured_values(resnet: LoadedModel, images) -> None:
    m = resnet.model
    x = resnet.normalize(images(2)).requires_grad_(True)
    got = capture(m, x, ["layer1.0.bn2", "layer2.0.conv1"])
    (g_bn2,) = torch.autograd.grad(got["layer1.0.bn2"].sum(), x, retain_graph=True)
    assert g_bn2.abs().sum() > 0
    (g_probe,) = torch.autograd.grad(got["layer2.0.conv1"][:, 3].sum(), x)

    plain = {}
    handle = m.layer2[0].conv1.register_forward_hook(lambda _m, _a, out: plain.setdefault("v", out))
    try:
        m(x)
    finally:
        handle.remove()
    (g_plain,) = torch.autograd.grad(plain["v"][:, 3].sum(), x)
    assert g_plain.abs().sum() > 0
    torch.testing.assert_close(g_probe, g_plain)


def test_forward_stops_after_last_needed_layer(resnet: LoadedModel, images) -> None:
    m = resnet.model
    calls = []
    handle = m.layer4.register_forward_hook(lambda *_: calls.append("layer4"))
    try:
        capture(m, resnet.normalize(images(1)), ["layer1.0.conv1", "layer2.1.bn1"])
        assert calls == []
        capture(m, resnet.normalize(images(1)), ["layer1.0.conv1"], stop=False)
        assert calls == ["layer4"]
    finally:
        handle.remove()
    assert not m._forward_hooks and not m.layer1[0].conv1._forward_hooks  # probes cleaned up


def test_transformer_tokens(vit: LoadedModel) -> None:
    m = vit.model
    x = vit.normalize(torch.rand(2, *vit.input_size))
    got = capture(m, x, ["blocks.2", "blocks.3:in", "norm"])
    n_tokens = 1 + (160 // 16) ** 2
    assert got["blocks.2"].shape == (2, n_tokens, m.embed_dim)
    torch.testing.assert_close(got["blocks.3:in"], got["blocks.2"])
    with torch.no_grad():
        torch.testing.assert_close(got["norm"], m.forward_features(x))


def test_unknown_layer_lists_closest_names(resnet: LoadedModel, images) -> None:
    with pytest.raises(MTIConfigError, match="unknown layer 'layer1.0.bn3'") as info:
        capture(resnet.model, images(1), ["layer1.0.bn3"])
    assert "layer1.0.bn2" in str(info.value)
    with pytest.raises(MTIConfigError, match="unknown layer ''"):
        capture(resnet.model, images(1), [""])
    # a bad name after a good one leaves no hook behind on the good one
    with pytest.raises(MTIConfigError, match="unknown layer 'nope'"):
        capture(resnet.model, images(1), ["layer1.0.conv1", "layer2.0.bn1:in", "nope"])
    assert not resnet.model.layer1[0].conv1._forward_hooks
    assert not resnet.model.layer2[0].bn1._forward_pre_hooks


def test_layer_never_reached_is_clear_error() -> None:
    class Partial(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.used = nn.Conv2d(3, 4, 3)
            self.unused = nn.Conv2d(4, 4, 3)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.used(x)

    net = Partial().eval()
    with pytest.raises(MTIConfigError, match=r"\['unused'\] were never reached"):
        capture(net, torch.rand(1, 3, 8, 8), ["used", "unused"])
    assert not net.used._forward_hooks and not net.unused._forward_hooks


def test_layer_shapes(resnet: LoadedModel) -> None:
    shapes = layer_shapes(
        resnet.model, resnet.input_size, ["layer1.0.conv1", "layer3.1.bn1", "fc:in", "fc"]
    )
    assert shapes == {
        "layer1.0.conv1": (64, 16, 16),
        "layer3.1.bn1": (256, 4, 4),
        "fc:in": (512,),
        "fc": (1000,),
    }
