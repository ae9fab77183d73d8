"""Image parameterisations: Fourier phase under a 1/f spectrum, and pixels."""

from __future__ import annotations

import pytest
import torch

from mti_lightning.core.errors import MTIConfigError
from mti_lightning.core.parameterizations import (
    FourierImage,
    PixelImage,
    make_parameterization,
)


def _logit(x: torch.Tensor) -> torch.Tensor:
    return torch.log(x) - torch.log1p(-x)


@pytest.mark.parametrize("kind", ["fourier", "pixel"])
@pytest.mark.parametrize("size", [(32, 32), (32, 48), (31, 47), (17, 2)])
def test_shape_and_range(kind: str, size: tuple[int, int]) -> None:
    param = make_parameterization(kind, 3, size)
    x = param()
    assert x.shape == (3, 3, *size)
    assert x.min() >= 0 and x.max() <= 1
    assert torch.isfinite(x).all()


@pytest.mark.parametrize("kind", ["fourier", "pixel"])
def test_deterministic_per_seed(kind: str) -> None:
    a = make_parameterization(kind, 2, (24, 40), seed=5)()
    b = make_parameterization(kind, 2, (24, 40), seed=5)()
    c = make_parameterization(kind, 2, (24, 40), seed=6)()
    torch.testing.assert_close(a, b, rtol=0, atol=0)
    assert (a - c).abs().mean() > 1e-2
    assert (a[0] - a[1]).abs().mean() > 1e-2  # images of one batch differ too


@pytest.mark.parametrize("kind", ["fourier", "pixel"])
@pytest.mark.parametrize("size", [(32, 32), (33, 47)])
def test_seeding_from_images_round_trips(kind: str, size: tuple[int, int]) -> None:
    gen = torch.Generator().manual_seed(0)
    target = 0.01 + 0.98 * torch.rand(2, 3, *size, generator=gen)
    param = make_parameterization(kind, 3, size, seed=1)
    before = param()[2].clone()
    param.seed_from(target)
    out = param()
    torch.testing.assert_close(out[:2], target, rtol=0, atol=1e-3)
    torch.testing.assert_close(out[2], before)  # the unseeded image is untouched


@pytest.mark.parametrize("kind", ["fourier", "pixel"])
def test_seeding_by_index(kind: str) -> None:
    target = 0.2 + 0.6 * torch.rand(1, 3, 16, 20)
    param = make_parameterization(kind, 3, (16, 20))
    param.seed_from(target, index=torch.tensor([1]))
    torch.testing.assert_close(param()[1:2], target, rtol=0, atol=1e-3)
    with pytest.raises(MTIConfigError, match="expected"):
        param.seed_from(torch.rand(1, 3, 8, 8))
    with pytest.raises(MTIConfigError, match="4 seed images for a batch of 3"):
        param.seed_from(torch.rand(4, 3, 16, 20))


@pytest.mark.parametrize("size", [(64, 64), (48, 65)])
def test_random_phase_image_has_unit_variance(size: tuple[int, int]) -> None:
    """Before the sigmoid (undone by a logit), a random-phase image has about unit variance."""
    param = FourierImage(8, size, decorrelate=False, seed=0)
    x = _logit(param().double())
    var = x.var(dim=(2, 3))
    assert 0.7 < var.mean() < 1.3
    assert (var > 0.5).all() and (var < 2.0).all()


def test_radial_power_falls_with_frequency() -> None:
    param = FourierImage(6, (64, 64), decorrelate=False, seed=3)
    x = _logit(param().double())
    power = torch.fft.fft2(x, norm="ortho").abs().square().mean((0, 1))
    fy = torch.fft.fftfreq(64).view(-1, 1)
    fx = torch.fft.fftfreq(64).view(1, -1)
    radius = torch.sqrt(fx**2 + fy**2)
    edges = torch.tensor([0.02, 0.05, 0.1, 0.2, 0.35, 0.5])
    bands = [
        power[(radius >= lo) & (radius < hi)].mean().item() for lo, hi in zip(edges[:-1], edges[1:])
    ]
    assert all(a > b for a, b in zip(bands, bands[1:])), bands
    # 1/f magnitude: power ~ 1/f^2, so a factor of ~7 in frequency is ~50x in power
    assert bands[0] / bands[-1] > 10


def test_decorrelated_colour_correlates_rgb() -> None:
    """In decorrelated mode the RGB channels share the (dominant) luminance component."""
    x = _logit(FourierImage(4, (48, 48), decorrelate=True, seed=0)())
    rgb = x.transpose(0, 1).flatten(1)
    corr = torch.corrcoef(rgb)
    assert corr[0, 1] > 0.5 and corr[0, 2] > 0.5 and corr[1, 2] > 0.5
    y = _logit(FourierImage(4, (48, 48), decorrelate=False, seed=0)())
    assert torch.corrcoef(y.transpose(0, 1).flatten(1))[0, 1].abs() < 0.2


@pytest.mark.parametrize("kind", ["fourier", "pixel"])
def test_gradient_reaches_parameters(kind: str) -> None:
    param = make_parameterization(kind, 2, (20, 30))
    (param()[:, 0].mean() - param()[:, 2].mean()).backward()
    (p,) = list(param.parameters())
    assert p.grad is not None and p.grad.abs().sum() > 0
    if kind == "fourier":
        assert p is param.phase
        assert not param.magnitude.requires_grad


def test_unknown_kind_and_bad_size() -> None:
    with pytest.raises(MTIConfigError, match="unknown parameterisation 'wavelet'") as info:
        make_parameterization("wavelet", 1, (8, 8))
    assert "fourier" in str(info.value) and "pixel" in str(info.value)
    with pytest.raises(MTIConfigError, match="size >= 2x2"):
        FourierImage(1, (1, 8))
    with pytest.raises(MTIConfigError, match="n >= 1"):
        PixelImage(0, (8, 8))
