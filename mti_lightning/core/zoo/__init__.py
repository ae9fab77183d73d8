"""Built-in models: small networks the project trains and ships, loadable offline by name.

Each entry maps a name to ``module:function``; the function takes ``pretrained: bool`` and
returns ``(model, config)`` where config holds ``input_size`` (C, H, W), ``mean``, ``std``
and ``trained`` (whether trained weights were loaded), and optionally ``attribution_layer``
(the layer ``search.attribution_layer=auto`` picks for this model where it lies upstream of the
target).
"""

from __future__ import annotations

import importlib
from typing import Any

from torch import nn

BUILTIN_MODELS: dict[str, str] = {
    "curvenet": "mti_lightning.core.zoo.curvenet:build",
}


def build_builtin(name: str, pretrained: bool = True) -> tuple[nn.Module, dict[str, Any]]:
    """Build the built-in model ``name``; raise KeyError if there is none of that name."""
    module_name, func_name = BUILTIN_MODELS[name].split(":")
    func = getattr(importlib.import_module(module_name), func_name)
    return func(pretrained=pretrained)
