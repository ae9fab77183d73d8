"""Batched transforms: K images x D draws in one grid_sample, image-major, seeded."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from tolerances import assert_reordered

from mti_lightning.core.errors import MTIConfigError
from mti_lightning.core.transforms import (
    TransformConfig,
    apply_draws,
    identity_draws,
    resize,
    sample_draws,
    sample_noise,
)

NO_NOISE = TransformConfig(scale=(0.5, 1.0), jitter=0.1, rotate=20.0, gaussian_noise=0.0)


def _draws(n: int, seed: int = 0, cfg: TransformConfig = NO_NOISE) -> torch.Tensor:
    return sample_draws(cfg, n, torch.Generator().manual_seed(seed))


def test_shape_and_image_major_order(images) -> None:
    x = images(3, size=(40, 56))
    draws = _draws(4)
    out = apply_draws(x, draws, (32, 32), NO_NOISE)
    assert out.shape == (12, 3, 32, 32)
    for k in range(3):
        for d in range(4):
            single = apply_draws(x[k : k + 1], draws[d : d + 1], (32, 32), NO_NOISE)
            assert_reordered(out[k * 4 + d], single[0], scale=1.0)  # batched vs one
    assert (out[0] - out[1]).abs().mean() > 1e-2  # different draws give different crops


def test_identity_draws_reproduce_the_canvas(images) -> None:
    x = images(2, size=32)
    cfg = TransformConfig(scale=(1.0, 1.0), jitter=0.0, gaussian_noise=0.0)
    same = apply_draws(x, identity_draws(3), (32, 32), cfg)
    torch.testing.assert_close(same, x.repeat_interleave(3, 0), rtol=0, atol=1e-6)
    for size in [(16, 16), (48, 40)]:
        out = apply_draws(x, identity_draws(1), size, cfg)
        expected = F.interpolate(x, size=size, mode="bilinear", align_corners=False)
        torch.testing.assert_close(out, expected, rtol=0, atol=1e-5)


def test_resize() -> None:
    x = torch.rand(2, 3, 32, 32)
    assert resize(x, (32, 32)) is x
    y = resize(torch.full((1, 3, 32, 32), 0.25), (20, 24))
    assert y.shape == (1, 3, 20, 24)
    torch.testing.assert_close(y, torch.full_like(y, 0.25))


def test_draws_are_seeded_and_in_range() -> None:
    cfg = TransformConfig(scale=(0.6, 0.9), jitter=0.05, rotate=10.0)
    a, b, c = _draws(64, 1, cfg), _draws(64, 1, cfg), _draws(64, 2, cfg)
    torch.testing.assert_close(a, b, rtol=0, atol=0)
    assert not torch.equal(a, c)
    side, cx, cy, angle = a.unbind(1)
    assert side.min() >= 0.6 and side.max() <= 0.9
    reach = 1 - side + 0.05
    assert (cx.abs() <= reach).all() and (cy.abs() <= reach).all()
    assert angle.abs().max() <= math.radians(10.0)
    assert angle.abs().max() > math.radians(5.0)  # the range is used


def test_noise_is_seeded_and_one_field_per_draw(images) -> None:
    cfg = TransformConfig(scale=(1.0, 1.0), jitter=0.0, gaussian_noise=0.1, uniform_noise=0.05)
    a = sample_noise(cfg, 3, (24, 24), seed=7, device="cpu")
    b = sample_noise(cfg, 3, (24, 24), seed=7, device="cpu")
    c = sample_noise(cfg, 3, (24, 24), seed=8, device="cpu")
    assert a.shape == (3, 3, 24, 24)
    torch.testing.assert_close(a, b, rtol=0, atol=0)
    assert not torch.equal(a, c)
    assert 0.08 < a.std() < 0.13  # gaussian 0.1 plus uniform 0.05 / sqrt(3)
    assert (a[0] - a[1]).abs().mean() > 1e-2  # each draw gets its own field
    quiet = TransformConfig(gaussian_noise=0.0)
    assert sample_noise(quiet, 3, (24, 24), seed=7, device="cpu") is None

    x = images(2, size=24)
    clean = apply_draws(x, identity_draws(3), (24, 24), cfg)
    noisy = apply_draws(x, identity_draws(3), (24, 24), cfg, a)
    for k in range(2):
        for d in range(3):
            torch.testing.assert_close(noisy[k * 3 + d] - clean[k * 3 + d], a[d])


def test_gradients_flow_back_to_images(images) -> None:
    x = images(2, size=32).requires_grad_(True)
    cfg = TransformConfig(scale=(1.0, 1.0), jitter=0.0, gaussian_noise=0.05)
    noise = sample_noise(cfg, 3, (32, 32), seed=0, device="cpu")
    apply_draws(x, identity_draws(3), (32, 32), cfg, noise).sum().backward()
    torch.testing.assert_close(x.grad, torch.full_like(x, 3.0))  # each pixel used once per draw

    x.grad = None
    out = apply_draws(x, _draws(5), (20, 20), NO_NOISE)
    (out[3] * torch.randn_like(out[3])).sum().backward()  # draw 3 of image 0 only
    assert x.grad[0].abs().sum() > 0
    assert x.grad[1].abs().sum() == 0


def test_one_grid_sample_call_for_any_number_of_draws(
    images, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls = []
    original = F.grid_sample

    def counting(*args, **kwargs):
        calls.append(args[0].shape)
        return original(*args, **kwargs)

    monkeypatch.setattr(F, "grid_sample", counting)
    x = images(3, size=32)
    for d in (1, 4, 16):
        calls.clear()
        out = apply_draws(x, _draws(d), (24, 24), NO_NOISE)
        assert out.shape == (3 * d, 3, 24, 24)
        assert len(calls) == 1


@pytest.mark.parametrize(
    "kwargs",
    [
        {"scale": (0.0, 1.0)},
        {"scale": (0.9, 0.8)},
        {"scale": (1.0, 2.5)},
        {"jitter": -0.1},
        {"rotate": -1.0},
        {"gaussian_noise": -0.1},
        {"padding": "circular"},
    ],
)
def test_bad_config_is_error(kwargs: dict) -> None:
    with pytest.raises(MTIConfigError):
        TransformConfig(**kwargs)
