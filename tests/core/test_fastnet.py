"""The step network: rewritten for speed, exact at every probed layer, values and gradients."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

import pytest
import torch
from tolerances import NETWORK, assert_reordered
from torch import nn

from mti_lightning.core import fastnet
from mti_lightning.core.bn_fold import ActAfterFold, conv_bn_pairs
from mti_lightning.core.fastnet import fast_network
from mti_lightning.core.models import LoadedModel, freeze, load_model
from mti_lightning.core.phase_grad import PhaseGradConv2d
from mti_lightning.core.pool_act import PoolThenAct
from mti_lightning.core.probes import capture


def _values_and_grads(lm: LoadedModel, x: torch.Tensor, layers: list[str]):
    x = x.clone().requires_grad_(True)
    acts = capture(lm.model, x, layers)
    total = sum((v * torch.linspace(-1, 1, v.numel()).view_as(v)).sum() for v in acts.values())
    (grad,) = torch.autograd.grad(total, x)
    return {k: v.detach() for k, v in acts.items()}, grad


def test_resnet_folds_and_matches_values_and_gradients(resnet: LoadedModel, images) -> None:
    layers = ["layer2.1.act2", "layer3.0.conv1"]
    before = {k: v.clone() for k, v in resnet.model.state_dict().items()}
    x = resnet.normalize(images(3))
    fast = fast_network(resnet, layers, x[:2])
    assert fast.channels_last and fast.note == ""
    assert ("layer1.0.conv1", "layer1.0.bn1") in fast.folded
    # all 20 conv->BN pairs of resnet18 (downsample paths included) but the probed conv's
    assert len(fast.folded) == 19
    assert isinstance(fast.lm.model.layer1[0].bn1, nn.Identity)
    assert fast.lm.model.conv1.weight.is_contiguous(memory_format=torch.channels_last)
    assert fast.lm.model.layer1[0].act1.inplace and not resnet.model.layer1[0].act1.inplace
    # the stem's ReLU runs after its max-pool, the stem conv takes the phase-gradient route
    assert fast.relus_after_pools == [("act1", "maxpool")]
    assert isinstance(fast.lm.model.act1, nn.Identity)
    assert isinstance(fast.lm.model.maxpool, PoolThenAct) and fast.lm.model.maxpool.act.inplace
    assert fast.phase_grad == ["conv1"]
    assert isinstance(fast.lm.model.conv1, PhaseGradConv2d)
    assert fast.describe() == {
        "batchnorms_folded": 19,
        "relus_after_pools": 1,
        "phase_grad_convs": 1,
        "channels_last": True,
        "inplace_relu": True,
        "note": "",
    }
    want, want_grad = _values_and_grads(resnet, x, layers)
    got, got_grad = _values_and_grads(fast.lm, x, layers)
    # folded BatchNorms and channels-last kernels: the network's sums in another order
    for k in layers:
        assert_reordered(got[k], want[k], tol=NETWORK)
    assert_reordered(got_grad, want_grad, tol=NETWORK)
    # the original network is untouched: measurements and callbacks keep using it
    assert isinstance(resnet.model.layer1[0].bn1, nn.BatchNorm2d)
    after = resnet.model.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)


@pytest.mark.parametrize("probe", ["layer1.0.conv1", "layer1.0.bn1:in"])
def test_probed_pre_batchnorm_value_is_not_folded(resnet: LoadedModel, images, probe) -> None:
    x = resnet.normalize(images(2))
    fast = fast_network(resnet, [probe], x)
    assert ("layer1.0.conv1", "layer1.0.bn1") not in fast.folded
    assert ("layer1.0.conv2", "layer1.0.bn2") in fast.folded
    want = capture(resnet.model, x, [probe])[probe]
    got = capture(fast.lm.model, x, [probe])[probe]
    assert_reordered(got, want)


def test_batchnorm_act_keeps_its_activation_and_names(images, randomize) -> None:
    torch.manual_seed(0)
    lm = dataclasses.replace(load_model("test_efficientnet"), input_size=(3, 64, 64))
    randomize(lm.model)
    layers = ["blocks.1.0.bn1.act", "blocks.2"]
    x = lm.normalize(images(2))
    fast = fast_network(lm, layers, x)
    assert ("blocks.1.0.conv_exp", "blocks.1.0.bn1") in fast.folded
    assert isinstance(fast.lm.model.get_submodule("blocks.1.0.bn1"), ActAfterFold)
    want = capture(lm.model, x, layers)
    got = capture(fast.lm.model, x, layers)
    for k in layers:
        assert_reordered(got[k], want[k], tol=NETWORK)


class _SharedConv(nn.Module):
    """conv -> BN, and the conv's raw output also added back: folding would change the add."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3, padding=1)
        self.bn = nn.BatchNorm2d(4)
        self.out = nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.conv(x)
        return self.out(self.bn(y) + y)


def test_a_fold_that_changes_a_probed_value_is_dropped(randomize) -> None:
    model = _SharedConv()
    randomize(model, seed=3)
    lm = LoadedModel("shared", freeze(model), (3, 8, 8), (0.0,) * 3, (1.0,) * 3, False)
    x = torch.randn(2, 3, 8, 8)
    assert conv_bn_pairs(model, x) == [("conv", "bn")]
    fast = fast_network(lm, ["out"], x)
    assert fast.folded == [] and "not used" in fast.note
    assert fast.describe()["batchnorms_folded"] == 0 and not fast.describe()["inplace_relu"]
    assert_reordered(capture(fast.lm.model, x, ["out"])["out"], capture(model, x, ["out"])["out"])


class _ConvReluOut(nn.Module):
    """conv -> ``combine(y, relu)`` -> out, for ReLUs an in-place rewrite would break."""

    def __init__(self, combine: Callable) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3, padding=1)
        self.act = nn.ReLU()
        self.out = nn.Identity()
        self.combine = combine

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.out(self.combine(self.conv(x), self.act))


def _reuses_pre_activation(y: torch.Tensor, relu: nn.Module) -> torch.Tensor:
    """The ReLU's input is used again afterwards: in place, the sum would change."""
    return relu(y) + y


def _saves_for_backward(y: torch.Tensor, relu: nn.Module) -> torch.Tensor:
    """``y ** 2`` keeps ``y`` for its backward before the ReLU: in place, the values stay
    right but the backward would read an overwritten ``y``."""
    return y**2 + relu(y)


def test_an_in_place_relu_that_changes_a_probed_value_is_dropped() -> None:
    model = _ConvReluOut(_reuses_pre_activation)
    lm = LoadedModel("reused", freeze(model), (3, 8, 8), (0.0,) * 3, (1.0,) * 3, False)
    x = torch.randn(2, 3, 8, 8)
    fast = fast_network(lm, ["out"], x)
    assert not fast.lm.model.act.inplace and "not used" in fast.note
    assert_reordered(capture(fast.lm.model, x, ["out"])["out"], capture(model, x, ["out"])["out"])


def test_vit_has_nothing_to_fold_and_stays_exact(vit: LoadedModel, images) -> None:
    layer = "blocks.2"
    x = vit.normalize(images(2, vit.input_size[1]))
    fast = fast_network(vit, [layer], x)
    assert fast.folded == []
    assert_reordered(
        capture(fast.lm.model, x, [layer])[layer], capture(vit.model, x, [layer])[layer]
    )


def test_check_runs_in_float32_inside_a_bf16_autocast_region(resnet: LoadedModel, images) -> None:
    """A caller inside Lightning's bf16 autocast still gets the fold (checked in float32)."""
    x = resnet.normalize(images(2))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        fast = fast_network(resnet, ["layer2.1.act2"], x)
    assert len(fast.folded) == 20 and fast.note == ""
    assert fast.folded == fast_network(resnet, ["layer2.1.act2"], x).folded


def test_a_rewrite_that_breaks_the_backward_is_dropped() -> None:
    model = _ConvReluOut(_saves_for_backward)
    lm = LoadedModel("saved", freeze(model), (3, 8, 8), (0.0,) * 3, (1.0,) * 3, False)
    x = torch.randn(2, 3, 8, 8)
    fast = fast_network(lm, ["out"], x)
    assert not fast.lm.model.act.inplace
    assert fast.note == "in-place ReLUs: changed a probed value or gradient, not used"
    x.requires_grad_(True)
    capture(fast.lm.model, x, ["out"])["out"].sum().backward()


class _ConvBnPool(nn.Module):
    """conv (1x1, one output channel reading input channel 0 only) -> BN -> ReLU -> max-pool:
    every value is one rounded product, whatever kernels the CPU picks."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 1, 1, bias=False)
        self.bn = nn.BatchNorm2d(1)
        self.act = nn.ReLU()
        self.pool = nn.MaxPool2d(2)
        with torch.no_grad():
            self.conv.weight.copy_(torch.tensor([0.7, 0.0, 0.0]).view(1, 3, 1, 1))
            self.bn.weight.fill_(0.5)
            self.bn.running_var.fill_(1.3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.pool(self.act(self.bn(self.conv(x))))


def _tie_pair(model: _ConvBnPool, folded: nn.Conv2d) -> tuple[float, float]:
    """Two inputs ``a < b`` that the network rounds to one value before its pool but the
    folded conv does not, or the other way round (found with this CPU's own kernels), so a
    pool window holding both routes its gradient to ``a`` in one network and ``b`` in the other."""
    a = (torch.tensor(0.5).view(torch.int32) + torch.arange(4096, dtype=torch.int32)).view(
        torch.float32
    )  # consecutive float32 numbers from 0.5 up
    x = torch.zeros(1, 3, 1, a.numel())
    x[0, 0, 0] = a
    with torch.no_grad():
        ref = model.bn(model.conv(x)).flatten()
        fast = folded(x).flatten()
    ties_ref, ties_fast = ref[1:] == ref[:-1], fast[1:] == fast[:-1]
    (k,) = torch.nonzero(ties_ref != ties_fast)[0].tolist()
    return float(a[k]), float(a[k + 1])


def test_a_pool_near_tie_moves_the_gradient_within_tolerance(monkeypatch) -> None:
    """A max-pool window whose two largest values are within float32 rounding sends its
    gradient either way once BatchNorms are folded. Built on purpose here (one window of 256
    holds such a tie): the check tolerates it at its default tolerance, and drops the fold
    when the tolerance is tighter than what the tie moves."""
    model = _ConvBnPool().eval()
    lm = LoadedModel("tie", freeze(model), (3, 32, 32), (0.0,) * 3, (1.0,) * 3, False)
    gen = torch.Generator().manual_seed(0)
    x = torch.zeros(1, 3, 32, 32)
    x[0, 0] = 0.2 * torch.rand(32, 32, generator=gen)  # every window's others are small
    x[0, 0, ::2, ::2] = 1.0 + torch.rand(16, 16, generator=gen)  # each window's winner
    refs = [fastnet.LayerRef.parse("pool")]
    grad = fastnet._probe(lm.model, x, refs)[fastnet.GRAD][0, 0, ::2, ::2]
    share = 2**0.5 * grad.abs() / grad.norm()
    # the window whose swapped gradient moves the whole gradient by closest to 1% (L2)
    i, j = divmod(int((share.log() - torch.tensor(0.01).log()).abs().argmin()), 16)
    folded = fast_network(lm, ["pool"], x, relu_after_pool=False, inplace_relu=False)
    a, b = _tie_pair(model, folded.lm.model.conv)
    x[0, 0, 2 * i, 2 * j], x[0, 0, 2 * i, 2 * j + 1] = a, b
    moved = float(share[i, j])
    assert 1e-3 < moved < 0.03

    fast = fast_network(lm, ["pool"], x)
    assert fast.note == "" and fast.folded == [("conv", "bn")]
    got = fastnet._probe(fast.lm.model, x, refs)[fastnet.GRAD]
    want = fastnet._probe(lm.model, x, refs)[fastnet.GRAD]
    torch.testing.assert_close(float((got - want).norm() / want.norm()), moved, rtol=1e-3, atol=0)
    monkeypatch.setattr(fastnet, "GRAD_TOL", 1e-4)
    assert "folding 1 BatchNorms" in fast_network(lm, ["pool"], x).note


@pytest.mark.slow
def test_a_max_pool_network_keeps_its_rewrites() -> None:
    """VGG's float32 max-pool near-ties move its input gradient by well under the tolerance."""
    torch.manual_seed(0)
    lm = load_model("vgg11_bn", input_size=(3, 128, 128))
    x = lm.normalize(torch.rand(2, 3, 128, 128))
    fast = fast_network(lm, ["features.21"], x)
    assert fast.note == ""
    assert len(fast.folded) == 8 and len(fast.relus_after_pools) == 5
