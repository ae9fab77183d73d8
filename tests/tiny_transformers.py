"""Tiny random-init vision transformers of every token layout the spatial view covers (timm's
own classes, shrunk by their constructor arguments so a test runs in seconds)."""

from __future__ import annotations

from functools import cache

import timm
import torch
from timm.models.levit import Levit

from mti_lightning.core.models import LoadedModel, load_model

# name -> (timm model or builder, its kwargs, input side in px)
BUILDS = {
    # a class token and a distillation token before a 2x2 patch grid
    "deit": (
        "deit_tiny_distilled_patch16_224",
        dict(img_size=32, depth=2, embed_dim=32, num_heads=2),
        32,
    ),
    # a class token and 4 register tokens before a 2x2 grid
    "reg": (
        "vit_small_patch14_reg4_dinov2",
        dict(img_size=28, depth=2, embed_dim=32, num_heads=2),
        28,
    ),
    # channels-last stages on 8x8, 4x4, 2x2, 1x1 grids; 2x2 attention windows
    "swin": (
        "swin_tiny_patch4_window7_224",
        dict(img_size=32, window_size=2, embed_dim=16, depths=(1, 1, 2, 1), num_heads=(1, 1, 2, 2)),
        32,
    ),
    # (N, C) tokens on a 4x4 grid, then (after an attention downsampling) on a 2x2 grid
    "levit": (
        Levit,
        dict(img_size=64, embed_dim=(16, 24), key_dim=8, depth=(1, 1), num_heads=(2, 2)),
        64,
    ),
}


@cache
def tiny(name: str) -> LoadedModel:
    """The tiny model ``name`` of :data:`BUILDS`, seeded, loaded at its input size."""
    build, kwargs, side = BUILDS[name]
    torch.manual_seed(0)
    if isinstance(build, str):
        model = timm.create_model(build, pretrained=False, **kwargs)
    else:
        model = build(**kwargs)
    return load_model(model.eval(), input_size=(3, side, side))
