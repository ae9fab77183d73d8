"""The photographs' own magnitude spectrum as a power law: the exponent ``decay`` of
``|F(f)| ~ 1/f**decay`` fitted offline over photo crops, to try as ``param.decay`` (the
Fourier parameterisation's fixed magnitude) in ``bench_quality --extra``.

    python -m benchmarks.photo_spectrum [--data photos:n=1000,seed=0] [--size 128]
"""

from __future__ import annotations

import argparse

import torch

from mti_lightning.world.photos import photo_crops


def magnitude_decay(images: torch.Tensor, low: float = 0.02, high: float = 0.4) -> float:
    """The least-squares slope of ``-log |F|`` against ``log f`` (cycles per pixel, radial, in
    ``[low, high]``) of the mean magnitude spectrum of the mean-removed, Hann-windowed grey
    images ``(B, 3, H, W)``."""
    grey = images.mean(dim=1).double()
    grey = grey - grey.mean(dim=(1, 2), keepdim=True)
    h, w = grey.shape[-2:]
    window = torch.hann_window(h, dtype=torch.float64)[:, None] * torch.hann_window(
        w, dtype=torch.float64
    )
    magnitude = torch.fft.fft2(grey * window).abs().mean(dim=0)
    fy = torch.fft.fftfreq(h, dtype=torch.float64)[:, None]
    fx = torch.fft.fftfreq(w, dtype=torch.float64)[None, :]
    f = torch.sqrt(fy**2 + fx**2)
    keep = (f >= low) & (f <= high)
    x, y = f[keep].log(), magnitude[keep].log()
    slope = ((x - x.mean()) * (y - y.mean())).sum() / ((x - x.mean()) ** 2).sum()
    return float(-slope)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", default="photos:n=1000,seed=0")
    parser.add_argument("--size", type=int, default=128)
    args = parser.parse_args()
    crops = photo_crops(args.data, size=args.size)
    images = torch.stack([crops[i][0] for i in range(len(crops))])
    print(
        f"decay={magnitude_decay(images):.3f} over {len(crops)} crops of {args.data} at {args.size} px"
    )


if __name__ == "__main__":
    main()
