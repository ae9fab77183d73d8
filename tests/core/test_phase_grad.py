"""Stem convolutions whose input gradient is taken by phases: the same gradient as autograd's."""

from __future__ import annotations

import pytest
import torch
from tolerances import BFLOAT16, assert_reordered
from torch import nn

from mti_lightning.core.phase_grad import PhaseGradConv2d, phase_grad_pays


def _frozen(conv: nn.Conv2d) -> nn.Conv2d:
    conv.weight.requires_grad_(False)
    if conv.bias is not None:
        conv.bias.requires_grad_(False)
    return conv


# (in, out, kernel, stride, padding, input side): resnet's stem, odd sides, no padding,
# patchify, a non-square kernel, and strides/kernels the speed rule itself turns down
SHAPES = [
    (3, 8, 7, 2, 3, 32),
    (3, 8, 7, 2, 3, 33),
    (3, 8, 7, 2, 0, 31),
    (3, 6, 4, 4, 0, 32),
    (3, 5, 8, 8, 0, 32),
    (2, 4, (5, 7), 2, (2, 3), 29),
    (3, 4, 3, 2, 1, 17),
    (1, 4, 6, 3, 1, 20),
]


@pytest.mark.parametrize(("cin", "cout", "k", "s", "p", "side"), SHAPES)
def test_input_gradient_and_value_match_the_convolution(cin, cout, k, s, p, side) -> None:
    torch.manual_seed(0)
    conv = _frozen(nn.Conv2d(cin, cout, k, s, p))
    fast = PhaseGradConv2d.from_conv(conv)
    x = torch.randn(3, cin, side, side + 1, requires_grad=True)
    want = conv(x)
    got = fast(x)
    torch.testing.assert_close(got, want, rtol=0, atol=0)
    g = torch.randn_like(want)
    (want_grad,) = torch.autograd.grad(want, x, g)
    (got_grad,) = torch.autograd.grad(got, x, g)
    assert got_grad.shape == x.shape
    assert_reordered(got_grad, want_grad)  # the phases' backward sums the taps in another order


def test_gradient_is_exact_in_double_and_differentiable_again() -> None:
    torch.manual_seed(0)
    conv = _frozen(nn.Conv2d(3, 4, 7, 2, 3, dtype=torch.float64))
    fast = PhaseGradConv2d.from_conv(conv)
    x = torch.randn(2, 3, 11, 10, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(fast, (x,))
    assert torch.autograd.gradgradcheck(fast, (x,))


def test_bf16_autocast_returns_the_input_dtype_gradient() -> None:
    torch.manual_seed(0)
    conv = _frozen(nn.Conv2d(3, 8, 7, 2, 3))
    fast = PhaseGradConv2d.from_conv(conv)
    x = torch.randn(2, 3, 32, 32, requires_grad=True)
    grads = []
    for net in (conv, fast):
        with torch.autocast("cpu", dtype=torch.bfloat16):
            out = net(x)
        assert out.dtype == torch.bfloat16
        grads.append(torch.autograd.grad(out.float().square().sum(), x)[0])
    assert grads[1].dtype == torch.float32
    assert_reordered(grads[1], grads[0], tol=BFLOAT16, scale=1.0)


def test_shares_parameters_and_skips_the_route_without_gradients() -> None:
    conv = _frozen(nn.Conv2d(3, 8, 7, 2, 3))
    fast = PhaseGradConv2d.from_conv(conv)
    assert fast.weight is conv.weight and fast.bias is conv.bias
    assert "phase_kernel" not in fast.state_dict()
    x = torch.randn(1, 3, 16, 16)
    with torch.no_grad():
        torch.testing.assert_close(fast(x), conv(x), rtol=0, atol=0)
    assert fast(x).grad_fn is None


@pytest.mark.parametrize(
    ("conv", "pays"),
    [
        (nn.Conv2d(3, 64, 7, 2, 3), True),  # resnet stem
        (nn.Conv2d(3, 96, 4, 4), True),  # convnext stem
        (nn.Conv2d(3, 192, 16, 16), True),  # vit patch embedding
        (nn.Conv2d(3, 32, 3, 2, 1), False),  # 3x3 stride-2 stem: slower by phases
        (nn.Conv2d(64, 64, 7, 2, 3), False),  # not a few-channel stem
        (nn.Conv2d(3, 64, 7, 1, 3), False),  # no stride
        (nn.Conv2d(3, 3, 7, 2, 3, groups=3), False),
        (nn.Conv2d(3, 64, 7, 2, 3, dilation=2), False),
        (nn.Conv2d(3, 64, 7, 2, 3, padding_mode="reflect"), False),
        (nn.Conv2d(3, 64, 7, (2, 1), 3), False),
    ],
)
def test_which_convolutions_take_the_phase_route(conv: nn.Conv2d, pays: bool) -> None:
    assert phase_grad_pays(_frozen(conv)) is pays


def test_a_trainable_convolution_is_left_alone() -> None:
    assert not phase_grad_pays(nn.Conv2d(3, 64, 7, 2, 3))
