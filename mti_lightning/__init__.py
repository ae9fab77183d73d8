"""mti-lightning: maximally tense images (MTIs) on Lightning.

    import mti_lightning as mti
    result = mti.search("curvenet", "bn2:19@center", steps=100)

The public API (``mti_lightning.api``), in the paper's order: ``load_model``, ``search``,
``visualize``, ``invert``, ``accentuate``, ``attribute``, ``atlas``, ``census``, ``circuit``,
``decompose``, ``compare``, and ``train`` (any architecture on the curves world). Importing the package
loads PyTorch, not Lightning, W&B or Hydra (they load when a run starts).
"""

from __future__ import annotations

from mti_lightning.api import (
    accentuate,
    atlas,
    attribute,
    census,
    circuit,
    compare,
    decompose,
    invert,
    load_model,
    search,
    train,
    visualize,
)
from mti_lightning.core.errors import MTIConfigError
from mti_lightning.face.source_tree import map_checkout_conf

map_checkout_conf()

__all__ = [
    "load_model",
    "search",
    "visualize",
    "invert",
    "accentuate",
    "attribute",
    "atlas",
    "census",
    "circuit",
    "decompose",
    "compare",
    "train",
    "MTIConfigError",
]
