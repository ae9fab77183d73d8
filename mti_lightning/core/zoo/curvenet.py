"""CurveNet: a small ReLU CNN that classifies the orientation of synthetic arcs (8 classes).

The built-in model of the project: small enough to train in minutes on a CPU and to ship inside
the package, yet with a middle layer (``bn2``/``act2``) whose units are orientation tuned and
inhibited by other orientations. Every operation is its own named submodule and every ReLU a
separate, not-in-place ``nn.ReLU``, so any layer can be probed by name: ``bn2`` (the
pre-activation), ``act2`` (post-ReLU) or ``act2:in`` (the same pre-activation, as the input of
the ReLU).

The model takes normalised input ``(x - MEAN) / STD`` with ``x`` in [0, 1]; the weights' record
``weights/curvenet.yaml`` holds the recipe that made them and their sha256, and
``RETRAIN_COMMAND`` (``mti experiment=train model=curvenet``) trains them again with it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file
from torch import nn

MEAN: tuple[float, float, float] = (0.5, 0.5, 0.5)
STD: tuple[float, float, float] = (0.25, 0.25, 0.25)
INPUT_SIZE: tuple[int, int, int] = (3, 64, 64)
NUM_CLASSES = 8
WEIGHTS_PATH = Path(__file__).parent / "weights" / "curvenet.safetensors"
RETRAIN_COMMAND = (
    "mti experiment=train model=curvenet "
    "train.out=mti_lightning/core/zoo/weights/curvenet.safetensors"
)


class CurveNet(nn.Module):
    """conv-bn-relu-pool x2, conv-bn-relu, global average pool, linear head (8 orientations).

    ``conv1`` has stride 2 (64x64 input -> 32x32 -> pool 16x16): the arcs' strokes are
    anti-aliased and at least 1.6 px wide, and full-resolution first layers cost 4x the
    training time. Map sizes at 64x64 input: ``bn2``/``act2`` 32 x 16 x 16, ``bn3``/``act3``
    48 x 8 x 8; ``act3`` units see 35 x 35 pixels.
    """

    def __init__(self, num_classes: int = NUM_CLASSES) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 16, kernel_size=5, stride=2, padding=2, bias=False)
        self.bn1 = nn.BatchNorm2d(16)
        self.act1 = nn.ReLU()
        self.pool1 = nn.MaxPool2d(2)
        self.conv2 = nn.Conv2d(16, 32, kernel_size=3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(32)
        self.act2 = nn.ReLU()
        self.pool2 = nn.MaxPool2d(2)
        self.conv3 = nn.Conv2d(32, 48, kernel_size=3, padding=1, bias=False)
        self.bn3 = nn.BatchNorm2d(48)
        self.act3 = nn.ReLU()
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.flatten = nn.Flatten()
        self.head = nn.Linear(48, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits (N x 8) for normalised images (N x 3 x 64 x 64; other sizes work too)."""
        x = self.pool1(self.act1(self.bn1(self.conv1(x))))
        x = self.pool2(self.act2(self.bn2(self.conv2(x))))
        x = self.act3(self.bn3(self.conv3(x)))
        return self.head(self.flatten(self.pool(x)))


def build(pretrained: bool = True) -> tuple[nn.Module, dict[str, Any]]:
    """CurveNet in eval mode and its input config; ``pretrained`` loads the shipped weights."""
    model = CurveNet()
    if pretrained:
        if not WEIGHTS_PATH.is_file():
            raise FileNotFoundError(
                f"CurveNet weights not found at {WEIGHTS_PATH}; retrain them with: "
                f"{RETRAIN_COMMAND}"
            )
        model.load_state_dict(load_file(WEIGHTS_PATH))
    model.eval()
    config = {
        "input_size": INPUT_SIZE,
        "mean": MEAN,
        "std": STD,
        "trained": pretrained,
        # the paper's "cam layer" for the middle layer's units: search.attribution_layer=auto
        "attribution_layer": "pool1",
    }
    return model, config
