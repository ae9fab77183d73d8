"""The search step made cheaper (issue 23) still makes the same images: short CurveNet searches
against figures pinned from the code before that work (commit ec9f274).

The step's cuts (the loss logged on logging steps only, ``affine_grid``'s base grid made once,
noise without a zero tensor, colour mixing as one matrix product, fewer ops for the last finite
images) compute every number as before: on the machine that pinned them the images came out
equal bit for bit. The tolerance is for other CPUs' float rounding (AVX2 against AVX-512
kernels): perturbing the initial phases by 1e-6 moved these figures by at most 3e-7, so
``NETWORK`` (1e-4 of the images' [0, 1] range) holds anywhere and still catches a changed step
(the learning rate 1% higher moves them by 4e-4, the noise 5% stronger by 3e-3, the jitter range
20% wider by 3e-2).
"""

from __future__ import annotations

import pytest
import torch
from tolerances import NETWORK, assert_reordered

from mti_lightning.core.io import save_png
from mti_lightning.core.parameterizations import FourierImage
from mti_lightning.face.api_config import compose_config
from mti_lightning.shells.search_run import run_stages

COMMON = [
    "model=curvenet",
    "trainer=cpu",
    "callbacks.snapshot_steps=[]",
    "callbacks.snapshot_every=0",
    "search.inversions.enabled=false",
    "param.canvas=[64,64]",
    "search.attribution_layer=pool1",
    "target.layer=bn2",
    "target.position=center",
    "param.scale=1.0",  # the Fourier contrast of the pinning commit (the default is 2 since)
]
# per kind: overrides, and the images' fingerprint (per image and channel the mean, then four
# fixed random projections) from commit ec9f274
PINNED = {
    "invert": (
        ["search=invert", "target.channel=[19]", "search.steps=6", "search.draws=8"],
        [0.5369129, 0.5181623, 0.5226321, 0.5157877, 0.5109035, 0.5236225]
        + [-0.7202644, -0.7112138, 0.1661355, 0.1044264],
    ),
    "mti": (
        ["search=mti", "target.channel=[3,19]", "search.mode=linearized", "search.steps=6"]
        + ["search.draws=4"],
        [0.5363708, 0.5174773, 0.5234749, 0.5146451, 0.5118907, 0.5233135]
        + [-0.6801918, -0.687607, 0.1687084, 0.0555171],
    ),
}


def fingerprint(images: torch.Tensor) -> torch.Tensor:
    """Per image and channel the mean, then four fixed random projections of all pixels."""
    w = torch.randn(4, *images.shape, generator=torch.Generator().manual_seed(0))
    projections = (w / images.numel() ** 0.5 * images).flatten(1).sum(1)
    return torch.cat([images.mean((2, 3)).flatten(), projections])


@pytest.mark.parametrize("kind", sorted(PINNED))
def test_short_curvenet_search_makes_the_pinned_images(kind, tmp_path):
    overrides, pinned = PINNED[kind]
    seed = tmp_path / "seed.png"
    with torch.no_grad():
        save_png(seed, FourierImage(1, (64, 64), seed=1)()[0])
    image = [f"search.image={seed}"] if kind == "invert" else []
    cfg = compose_config([*COMMON, *overrides, *image])
    run = run_stages(cfg, tmp_path / kind, logger=False)
    got = fingerprint(run.images.detach().float().cpu())
    # pinned on one CPU, checked on any: the steps' rounding differs with the kernels
    assert_reordered(got, torch.tensor(pinned), tol=NETWORK, scale=1.0)
