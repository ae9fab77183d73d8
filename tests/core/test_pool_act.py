"""A ReLU before a max-pool moved after it: the same values and gradients, bit for bit."""

from __future__ import annotations

import pytest
import torch
from tolerances import assert_reordered
from torch import nn

from mti_lightning.core.fastnet import fast_network
from mti_lightning.core.models import LoadedModel, freeze
from mti_lightning.core.pool_act import PoolThenAct, move_relu_after_pool, relu_pool_pairs
from mti_lightning.core.probes import capture


def _vgg_block() -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(3, 4, 3, padding=1),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Conv2d(4, 4, 3, padding=1),
        nn.ReLU(),
        nn.MaxPool2d(3, 2, 1),
        nn.Conv2d(4, 2, 1),
    )


@pytest.mark.parametrize("inplace", [False, True])
def test_values_and_gradients_are_identical(inplace: bool) -> None:
    torch.manual_seed(0)
    net = freeze(_vgg_block())
    assert relu_pool_pairs(net, torch.randn(1, 3, 16, 16)) == [("1", "2"), ("4", "5")]
    moved = freeze(_vgg_block())
    moved.load_state_dict(net.state_dict())
    for relu, pool in relu_pool_pairs(moved, torch.randn(1, 3, 16, 16)):
        move_relu_after_pool(moved, relu, pool)
    assert isinstance(moved[1], nn.Identity) and isinstance(moved[2], PoolThenAct)
    for m in moved.modules():
        if isinstance(m, nn.ReLU):
            m.inplace = inplace
    # shifted negative: many windows hold no positive value at all
    x = (torch.randn(2, 3, 16, 16) - 0.5).requires_grad_(True)
    want, got = net(x), moved(x)
    assert torch.equal(want, got)
    g = torch.randn_like(want)
    assert torch.equal(torch.autograd.grad(want, x, g)[0], torch.autograd.grad(got, x, g)[0])


class _StemAndUse(nn.Module):
    """conv -> ReLU -> max-pool, with the ReLU's output also read by the head."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3, padding=1)
        self.act = nn.ReLU()
        self.pool = nn.MaxPool2d(2)
        self.out = nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.act(self.conv(x))
        return self.out(self.pool(y).mean() + y.mean())


def _wrap(net: nn.Module) -> LoadedModel:
    return LoadedModel("toy", freeze(net), (3, 8, 8), (0.0,) * 3, (1.0,) * 3, False)


def test_a_relu_read_elsewhere_is_kept_before_the_pool() -> None:
    torch.manual_seed(0)
    lm = _wrap(_StemAndUse())
    x = torch.randn(2, 3, 8, 8)
    fast = fast_network(lm, ["out"], x)
    assert fast.relus_after_pools == []
    assert "moving 1 ReLUs after their max-pools" in fast.note and "not used" in fast.note
    assert type(fast.lm.model.act) is nn.ReLU
    assert_reordered(capture(fast.lm.model, x, ["out"])["out"], lm.model(x))


@pytest.mark.parametrize(
    ("probe", "moved"), [("act1", False), ("maxpool:in", False), ("maxpool", True)]
)
def test_a_probed_relu_output_is_not_moved(resnet: LoadedModel, images, probe, moved) -> None:
    x = resnet.normalize(images(2))
    fast = fast_network(resnet, [probe], x)
    assert (fast.relus_after_pools == [("act1", "maxpool")]) is moved
    assert_reordered(
        capture(fast.lm.model, x, [probe])[probe], capture(resnet.model, x, [probe])[probe]
    )
