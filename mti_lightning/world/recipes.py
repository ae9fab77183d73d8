"""Training recipes measured to work on the curves world (64x64, 8 orientations), per model.

Each entry overrides :data:`mti_lightning.world.train.DEFAULT_RECIPE`; a model without an entry
trains with the default recipe (AdamW, lr 2e-3, one-cycle, 12k images). The held-out accuracy
and training time each recipe reached are in ``docs/compare_report.md``.
"""

from __future__ import annotations

from typing import Any

RECIPES: dict[str, dict[str, Any]] = {
    # ResNet family: the default recipe as it stands
    "resnet10t": {"model": "resnet10t"},
}

# the architectures `mti experiment=compare` trains and compares with CurveNet by default
COMPARE_MODELS = tuple(RECIPES)


def recipe_for(model: str, overrides: dict[str, Any] | None = None) -> dict[str, Any]:
    """The recipe of ``model``: its measured entry (or the default) with ``overrides``."""
    return {**RECIPES.get(model, {}), **(overrides or {}), "model": model}
