"""Curve stimuli sized and placed for a unit's receptive field, with background-only controls.

The curves world renders arcs that span most of its image; a unit deep in an ImageNet network
at 224 px sees a patch of a few dozen pixels at its position, so arcs drawn at the world's
scale fill far more than its receptive field and what it is tuned to goes unseen. Here the
same generator (``world/curves.py``) draws single arcs at a chosen scale, centred on the canvas
on a flat background (no distractors, no noise), and each image's background alone is its
control: a unit is *actively suppressed* by an orientation where its response falls below its
response to the background without the arc.
"""

from __future__ import annotations

import torch

from mti_lightning.world.curves import NUM_CLASSES, CurveConfig, generate


def arc_config(arc_px: float, canvas: int = 224) -> CurveConfig:
    """Single arcs the size the curves world draws on an ``arc_px`` image (radius 0.18-0.35,
    stroke 0.03-0.06 of it, at least 2 px), centred on a flat ``canvas`` background."""
    stroke = (max(0.03 * arc_px, 2.0) / canvas, max(0.06 * arc_px, 3.0) / canvas)
    return CurveConfig(
        size=canvas,
        radius_range=(0.18 * arc_px / canvas, 0.35 * arc_px / canvas),
        thickness_range=stroke,
        position_jitter=0.0,
        backgrounds=("flat",),
        extra_noise_range=(0.0, 0.0),
        n_distractors_range=(0, 0),
    )


def centred_arcs(
    per_orientation: int, arc_px: float, canvas: int = 224, seed: int = 11
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``per_orientation`` arcs of each of the 8 orientations at scale ``arc_px``, centred on a
    ``canvas`` px flat background: images ``(N, 3, canvas, canvas)`` in [0, 1], labels ``(N,)``
    and the background-only controls ``(N, 3, canvas, canvas)`` (each image's flat colour)."""
    config = arc_config(arc_px, canvas)
    images, labels = [], []
    index = 0
    while len(labels) < per_orientation * NUM_CLASSES:
        sample = generate(seed, index, config)
        index += 1
        if sum(1 for lab in labels if lab == sample.label) < per_orientation:
            images.append(torch.from_numpy(sample.image))
            labels.append(sample.label)
    x = torch.stack(images)
    background = x[:, :, :1, :1].expand_as(x).contiguous()  # flat: a corner pixel is the colour
    return x, torch.tensor(labels), background
