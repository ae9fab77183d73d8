"""Training recipes for the curves world (64x64, 8 orientations), per model, as measured.

Each entry overrides :data:`mti_lightning.world.train.DEFAULT_RECIPE` (AdamW, one-cycle, batch
128, 12,288 images, seed 0); a model without an entry trains with the default recipe, and
``curvenet`` with the recipe of its shipped weights. Figures: held-out accuracy (1,024 images
of a seed never trained on) and training time, one run each on a 2-core AMD EPYC (no GPU,
torch 2.14.1 on CPU), measured with :func:`~mti_lightning.world.train.train_model` (what
``mti experiment=train model.name=NAME`` runs). What did not work there: one epoch (96 steps)
at the default lr 2e-3 and 30% warm-up left resnet10t at 30.5%; mobilenetv3_small_050 reached
68.2% in 4 epochs and 92.7% in 12 (of 12,288 images); edgenext_xx_small stayed at chance
(12.0%) after 4 epochs at lr 2e-3. Trained networks below 90% are flagged UNDERTRAINED in a
comparison.
"""

from __future__ import annotations

from typing import Any

import yaml

from mti_lightning.core.zoo.curvenet import WEIGHTS_PATH

RECIPES: dict[str, dict[str, Any]] = {
    # a ResNet: 3 epochs, 288 steps: 96.5% held-out in 207 s
    "resnet10t": {"model": "resnet10t", "epochs": 3, "warmup": 0.1},
    # a MobileNet (depthwise-separable convolutions, squeeze-excitation, hard-swish):
    # 24,576 images x 12 epochs, 2,304 steps at lr 6e-3: 97.4% held-out in 340 s
    "mobilenetv3_small_050": {
        "model": "mobilenetv3_small_050",
        "train_size": 24576,
        "epochs": 12,
        "lr": 0.006,
        "warmup": 0.1,
    },
    # attention: LeViT, a convolutional stem, then attention and MLP blocks on a shrinking
    # token grid (no class token: a unit is read as the mean over tokens); 10 epochs, 960
    # steps at lr 1e-3: 94.2% held-out in 264 s
    "levit_128s": {"model": "levit_128s", "epochs": 10, "lr": 0.001, "warmup": 0.1},
    # attention in a hybrid: MobileViT, MobileNet blocks with transformer blocks between;
    # 4 epochs, 384 steps: 93.0% held-out in 191 s
    "mobilevit_xxs": {"model": "mobilevit_xxs", "epochs": 4, "warmup": 0.1},
}


def shipped_curvenet_recipe() -> dict[str, Any]:
    """The recipe that made CurveNet's shipped weights, read from their record
    (``core/zoo/weights/curvenet.yaml``, beside the weights' sha256): ``mti experiment=train
    model=curvenet`` trains with it. Records written before the common training path hold the
    recipe without ``model``, ``warmup`` and ``label_smoothing`` (then 0.3 and 0) and with
    CurveNet's own ``mean``/``std``."""
    recipe = yaml.safe_load(WEIGHTS_PATH.with_suffix(".yaml").read_text())["recipe"]
    kept = {k: v for k, v in recipe.items() if k not in ("mean", "std")}
    return {"warmup": 0.3, "label_smoothing": 0.0, **kept, "model": "curvenet"}


def recipe_for(model: str, overrides: dict[str, Any] | None = None) -> dict[str, Any]:
    """The recipe of ``model``: its measured entry (or the default) with ``overrides``;
    CurveNet's is the recipe that made its shipped weights."""
    base = shipped_curvenet_recipe() if model == "curvenet" else RECIPES.get(model, {})
    return {**base, **(overrides or {}), "model": model}
