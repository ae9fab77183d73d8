"""Batched differentiable augmentations: every image x every draw in one ``grid_sample``.

A draw is one random box crop (side as a fraction of the canvas, centre offset, optional
rotation), resized to the model's input. Draws are sampled from a seeded ``torch.Generator``
on the host as a small ``(D, 4)`` tensor; applying them to K images is a single kernel that
yields ``K * D`` inputs, image-major. Noise is one field per draw, drawn on the device from a
per-step seed, so splitting the draws across processes splits the noise the same way.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from mti_lightning.core.errors import MTIConfigError


@dataclass(frozen=True)
class TransformConfig:
    """Ranges of the random draws; the identity when scale is (1, 1) and everything else 0."""

    scale: tuple[float, float] = (0.85, 1.0)
    jitter: float = 0.05
    rotate: float = 0.0
    gaussian_noise: float = 0.02
    uniform_noise: float = 0.0
    padding: str = "reflection"

    def __post_init__(self) -> None:
        lo, hi = self.scale
        if not 0 < lo <= hi <= 2:
            raise MTIConfigError(f"transform scale {self.scale} must satisfy 0 < lo <= hi <= 2")
        if self.jitter < 0 or self.rotate < 0 or self.gaussian_noise < 0 or self.uniform_noise < 0:
            raise MTIConfigError("transform jitter, rotate and noise amplitudes must be >= 0")
        if self.padding not in ("reflection", "zeros", "border"):
            raise MTIConfigError(f"padding {self.padding!r}; valid: reflection, zeros, border")


def sample_draws(cfg: TransformConfig, n: int, generator: torch.Generator) -> torch.Tensor:
    """``(n, 4)`` draws: crop side fraction, centre x and y (in [-1, 1] units), angle (rad)."""
    u = torch.rand(n, 4, generator=generator)
    lo, hi = cfg.scale
    # in place on one (n, 4) tensor: a dozen small ops instead of two dozen, the same numbers
    draws = u.mul(2).sub_(1)
    side = lo + (hi - lo) * u[:, 0]
    reach = (1 - side).clamp_min_(0).add_(cfg.jitter)
    draws[:, 1:3].mul_(reach.unsqueeze(1))
    draws[:, 3].mul_(math.radians(cfg.rotate))
    draws[:, 0] = side
    return draws


def identity_draws(n: int = 1) -> torch.Tensor:
    """Draws that show the whole canvas unchanged (for evaluation)."""
    return torch.tensor([[1.0, 0.0, 0.0, 0.0]]).repeat(n, 1)


def _theta(draws: torch.Tensor) -> torch.Tensor:
    side, cx, cy, angle = draws.unbind(1)
    cos, sin = torch.cos(angle) * side, torch.sin(angle) * side
    return torch.stack([cos, -sin, cx, sin, cos, cy], 1).view(-1, 2, 3)


def sample_noise(
    cfg: TransformConfig,
    n_draws: int,
    out_size: tuple[int, int],
    seed: int,
    device: torch.device | str,
    dtype: torch.dtype = torch.float32,
) -> torch.Tensor | None:
    """Additive noise ``(n_draws, 3, h, w)``, one field per draw shared by all images, drawn
    on the device from ``seed``; None when the config has no noise."""
    if cfg.gaussian_noise <= 0 and cfg.uniform_noise <= 0:
        return None
    gen = torch.Generator(device=device).manual_seed(seed)
    shape = (n_draws, 3, *out_size)
    noise = None
    if cfg.gaussian_noise > 0:
        noise = torch.randn(shape, generator=gen, device=device, dtype=dtype).mul_(cfg.gaussian_noise)
    if cfg.uniform_noise > 0:
        u = torch.rand(shape, generator=gen, device=device, dtype=dtype)
        u = u.mul_(2).sub_(1).mul_(cfg.uniform_noise)
        noise = u if noise is None else noise.add_(u)
    return noise


@functools.lru_cache(maxsize=8)
def _base_grid(
    n: int, h: int, w: int, device: torch.device, dtype: torch.dtype
) -> torch.Tensor:
    """``affine_grid``'s base grid ``(n, h * w, 3)`` (pixel centres in [-1, 1] units and a 1),
    made as it makes it, once per shape: a step then only multiplies it by its draws' matrices,
    with the same numbers as ``F.affine_grid(theta, ..., align_corners=False)``."""
    with torch.inference_mode(False), torch.no_grad():
        base = torch.empty(n, h, w, 3, device=device, dtype=dtype)
        base[..., 0].copy_(_centres(w, device, dtype))
        base[..., 1].copy_(_centres(h, device, dtype).unsqueeze(-1))
        base[..., 2].fill_(1)
    return base.view(n, h * w, 3)


def _centres(n: int, device: torch.device, dtype: torch.dtype) -> torch.Tensor:
    """Centres of ``n`` pixels spanning [-1, 1] (``align_corners=False``)."""
    if n <= 1:
        return torch.zeros((), device=device, dtype=dtype)
    return torch.linspace(-1, 1, n, device=device, dtype=dtype) * (n - 1) / n


def apply_draws(
    images: torch.Tensor,
    draws: torch.Tensor,
    out_size: tuple[int, int],
    cfg: TransformConfig,
    noise: torch.Tensor | None = None,
) -> torch.Tensor:
    """Crop/resize every image with every draw: ``(K, 3, H, W)`` x ``(D, 4)`` ->
    ``(K * D, 3, h, w)``, image-major, in one ``grid_sample``; then add the draws' noise."""
    k, c, h_in, w_in = images.shape
    d = draws.shape[0]
    theta = _theta(draws.to(images.device, images.dtype))
    base = _base_grid(d, *out_size, images.device, images.dtype)
    grid = base.bmm(theta.transpose(1, 2)).view(d, *out_size, 2)
    stacked = images.reshape(1, k * c, h_in, w_in).expand(d, -1, -1, -1)
    out = F.grid_sample(
        stacked, grid, mode="bilinear", padding_mode=cfg.padding, align_corners=False
    )
    out = out.view(d, k, c, *out_size)
    if noise is not None:
        out = out + noise.to(out.dtype).unsqueeze(1)
    return out.transpose(0, 1).reshape(k * d, c, *out_size)


def resize(images: torch.Tensor, out_size: tuple[int, int]) -> torch.Tensor:
    """Plain resize of the whole canvas to the model input (no draws)."""
    if tuple(images.shape[-2:]) == tuple(out_size):
        return images
    return F.interpolate(
        images, size=out_size, mode="bilinear", align_corners=False, antialias=True
    )
