"""Untrained networks of any family, built for a classification task at a given image size.

``curvenet`` (the built-in), any timm model by name, and ``torchvision:NAME``. timm models that
fix their input size at construction (ViT, LeViT, ...) are rebuilt with ``img_size`` set to
the task's size when they do not run at it as built; every constructor argument used is kept
(``kwargs``) so that ``load_model(name, checkpoint=...)`` builds the same network again.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from mti_lightning.core.errors import MTIConfigError
from mti_lightning.core.models import IMAGENET_MEAN, IMAGENET_STD, check_model_name
from mti_lightning.core.models import TORCHVISION_PREFIX as TORCHVISION
from mti_lightning.core.zoo import BUILTIN_MODELS, build_builtin


@dataclass
class Network:
    """A trainable network, the constructor arguments that rebuild it, and its input."""

    name: str
    model: nn.Module
    kwargs: dict[str, Any]
    input_size: tuple[int, int, int]
    mean: tuple[float, ...]
    std: tuple[float, ...]

    def record(self) -> dict[str, Any]:
        """The ``model`` section of a checkpoint record (see core/checkpoint_record.py)."""
        return {
            "name": self.name,
            "kwargs": dict(self.kwargs),
            "input_size": list(self.input_size),
            "mean": list(self.mean),
            "std": list(self.std),
        }


def _runs_at(model: nn.Module, size: int) -> bool:
    model.eval()
    try:
        with torch.no_grad():
            model(torch.zeros(1, 3, size, size))
    except (AssertionError, RuntimeError, ValueError):
        return False
    finally:
        model.train()
    return True


def _timm(name: str, num_classes: int, size: int, kwargs: dict[str, Any]) -> Network:
    import timm

    full = {"num_classes": num_classes, **kwargs}
    try:
        model = timm.create_model(name, pretrained=False, **full)
        if "img_size" not in full and not _runs_at(model, size):
            full["img_size"] = size
            model = timm.create_model(name, pretrained=False, **full)
    except TypeError as err:
        raise MTIConfigError(f"model {name}: bad constructor arguments {kwargs} ({err})") from err
    if not _runs_at(model, size):
        raise MTIConfigError(
            f"model {name} does not run on {size}x{size} images even with img_size={size}; "
            "give constructor arguments in train.kwargs (e.g. patch_size) or another image_size"
        )
    data = timm.data.resolve_data_config({}, model=model)
    return Network(name, model, full, (3, size, size), tuple(data["mean"]), tuple(data["std"]))


def build_network(
    name: str, num_classes: int, size: int, kwargs: dict[str, Any] | None = None
) -> Network:
    """An untrained ``name`` with ``num_classes`` outputs that runs on ``size``-pixel images
    (a pretrained built-in such as ``efficientnet_lite0.imagenet`` keeps its weights and gets a
    new head: fine-tuning)."""
    check_model_name(name)
    kwargs = dict(kwargs or {})
    if name == "curvenet":
        from mti_lightning.core.zoo.curvenet import MEAN, STD, CurveNet

        if kwargs:
            raise MTIConfigError(f"curvenet takes no constructor arguments, got {kwargs}")
        return Network(name, CurveNet(num_classes), {}, (3, size, size), MEAN, STD)
    if name in BUILTIN_MODELS and name != "curvenet":  # pretrained built-ins are fine-tuned
        model, cfg = build_builtin(name, pretrained=True, num_classes=num_classes, **kwargs)
        full = {"num_classes": num_classes, **kwargs}
        return Network(name, model, full, (3, size, size), cfg["mean"], cfg["std"])
    if name.startswith(TORCHVISION):
        import torchvision

        full = {"num_classes": num_classes, **kwargs}
        model = torchvision.models.get_model(name[len(TORCHVISION) :], weights=None, **full)
        return Network(name, model, full, (3, size, size), IMAGENET_MEAN, IMAGENET_STD)
    return _timm(name, num_classes, size, kwargs)
