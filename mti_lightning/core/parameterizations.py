"""Image parameterisations: ``nn.Module``s whose parameters are a batch of images.

``FourierImage`` optimises the Fourier phase of each colour channel (in decorrelated colour)
under a fixed magnitude spectrum, a fitted ``1/f**decay`` power law as natural images have;
seeding from an image takes magnitude and phase from the image itself (accentuation).
``PixelImage`` optimises pixels directly. Both return images in [0, 1] via a sigmoid.
``InputVectors`` is the parameterisation of a model that reads vectors (the toy models): the
vectors themselves, projected back into their box after every optimiser step.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from mti_lightning.core.color import from_rgb, mixing_matrix, to_rgb
from mti_lightning.core.errors import MTIConfigError

_EPS = 1e-4


def power_law_magnitude(h: int, w: int, decay: float = 1.0) -> torch.Tensor:
    """Magnitude spectrum ``(h, w//2+1)`` proportional to ``1/f**decay``, scaled so that an
    image with uniformly random phases has unit pixel variance (Parseval, ortho FFT)."""
    fy = torch.fft.fftfreq(h).view(-1, 1)
    fx = torch.fft.rfftfreq(w).view(1, -1)
    f = torch.sqrt(fx**2 + fy**2)
    f[0, 0] = 1.0 / max(h, w)
    mag = f.pow(-decay)
    weight = torch.full_like(mag, 2.0)
    weight[:, 0] = 1.0
    if w % 2 == 0:
        weight[:, -1] = 1.0
    var = (weight * mag**2).sum() / (h * w)
    return mag / var.sqrt()


def _logit(images: torch.Tensor) -> torch.Tensor:
    x = images.clamp(_EPS, 1 - _EPS)
    return torch.log(x) - torch.log1p(-x)


def _check_images(images: torch.Tensor, n: int, size: tuple[int, int]) -> None:
    if images.dim() != 4 or images.shape[1] != 3 or tuple(images.shape[2:]) != size:
        raise MTIConfigError(
            f"seed images have shape {tuple(images.shape)}; expected (k, 3, {size[0]}, {size[1]})"
        )
    if images.shape[0] > n:
        raise MTIConfigError(f"{images.shape[0]} seed images for a batch of {n}")


class FourierImage(nn.Module):
    """K images as Fourier phases under a fixed natural-image magnitude spectrum."""

    def __init__(
        self,
        n: int,
        size: tuple[int, int],
        decay: float = 1.0,
        scale: float = 1.0,
        decorrelate: bool = True,
        seed: int = 0,
    ):
        super().__init__()
        if n < 1 or min(size) < 2:
            raise MTIConfigError(f"need n >= 1 images of size >= 2x2, got n={n}, size={size}")
        self.size = (int(size[0]), int(size[1]))
        self.decorrelate = decorrelate
        h, w = self.size
        gen = torch.Generator().manual_seed(seed)
        phase = (torch.rand(n, 3, h, w // 2 + 1, generator=gen) * 2 - 1) * math.pi
        self.phase = nn.Parameter(phase)
        mag = power_law_magnitude(h, w, decay) * scale
        self.register_buffer("magnitude", mag.expand(n, 3, -1, -1).contiguous())
        self.register_buffer("mixing", mixing_matrix(), persistent=False)

    @property
    def n(self) -> int:
        return self.phase.shape[0]

    def forward(self) -> torch.Tensor:
        spectrum = torch.polar(self.magnitude, self.phase)
        x = torch.fft.irfft2(spectrum, s=self.size, norm="ortho")
        if self.decorrelate:
            x = to_rgb(x, self.mixing)
        return torch.sigmoid(x)

    @torch.no_grad()
    def seed_from(self, images: torch.Tensor, index: torch.Tensor | None = None) -> None:
        """Set images ``index`` (default 0..k-1) to ``images`` in [0, 1], exactly."""
        _check_images(images, self.n, self.size)
        idx = torch.arange(images.shape[0]) if index is None else index
        x = _logit(images.to(self.phase.device, torch.float32))
        if self.decorrelate:
            x = from_rgb(x)
        spectrum = torch.fft.rfft2(x, norm="ortho")
        self.magnitude[idx] = spectrum.abs()
        self.phase[idx] = spectrum.angle()


class PixelImage(nn.Module):
    """K images as per-pixel logits."""

    def __init__(self, n: int, size: tuple[int, int], scale: float = 0.1, seed: int = 0, **_):
        super().__init__()
        if n < 1 or min(size) < 2:
            raise MTIConfigError(f"need n >= 1 images of size >= 2x2, got n={n}, size={size}")
        self.size = (int(size[0]), int(size[1]))
        gen = torch.Generator().manual_seed(seed)
        self.logits = nn.Parameter(torch.randn(n, 3, *self.size, generator=gen) * scale)

    @property
    def n(self) -> int:
        return self.logits.shape[0]

    def forward(self) -> torch.Tensor:
        return torch.sigmoid(self.logits)

    @torch.no_grad()
    def seed_from(self, images: torch.Tensor, index: torch.Tensor | None = None) -> None:
        """Set images ``index`` (default 0..k-1) to ``images`` in [0, 1]."""
        _check_images(images, self.n, self.size)
        idx = torch.arange(images.shape[0]) if index is None else index
        self.logits[idx] = _logit(images.to(self.logits.device, torch.float32))


class InputVectors(nn.Module):
    """K input vectors ``(K, N)`` optimised directly inside the box ``[low, high]``: the
    search calls :meth:`project` after every optimiser step (tension in a piecewise-linear
    net peaks on the box's faces, which a projection reaches exactly and a squashing
    function never does)."""

    def __init__(self, init: torch.Tensor, low: float, high: float):
        super().__init__()
        if init.dim() != 2 or low >= high:
            raise MTIConfigError(
                f"input vectors of shape {tuple(init.shape)} in [{low}, {high}]; need (K, N) "
                "and low < high"
            )
        self.low, self.high = float(low), float(high)
        self.x = nn.Parameter(init.detach().clone().float().clamp(self.low, self.high))

    @property
    def n(self) -> int:
        return self.x.shape[0]

    @property
    def size(self) -> tuple[int]:
        return (self.x.shape[1],)

    def forward(self) -> torch.Tensor:
        return self.x

    @torch.no_grad()
    def project(self) -> None:
        """Clamp the vectors into the box."""
        self.x.clamp_(self.low, self.high)


PARAMETERIZATIONS = {"fourier": FourierImage, "pixel": PixelImage}


def make_parameterization(kind: str, n: int, size: tuple[int, int], **kwargs) -> nn.Module:
    """Build the parameterisation ``kind`` (``fourier`` or ``pixel``) for ``n`` images."""
    if kind not in PARAMETERIZATIONS:
        raise MTIConfigError(
            f"unknown parameterisation {kind!r}; valid: {', '.join(PARAMETERIZATIONS)}"
        )
    return PARAMETERIZATIONS[kind](n, size, **kwargs)
