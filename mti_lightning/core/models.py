"""Model loading: built-in models, torchvision and timm models by name, any ``nn.Module``, and
local checkpoints, frozen for probing.

Every loaded model is in eval mode with frozen parameters and no in-place activations (an
in-place ReLU would overwrite the pre-activation a probe captured), and carries the input size
and normalisation it expects, read from timm's data config or torchvision's weight presets.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from mti_lightning.core.checkpoint_record import model_record
from mti_lightning.core.errors import MTIConfigError, closest
from mti_lightning.core.zoo import BUILTIN_MODELS, build_builtin


@dataclass
class LoadedModel:
    """A frozen network and the input it expects (images in [0, 1] are normalised by it)."""

    name: str
    model: nn.Module
    input_size: tuple[int, int, int]
    mean: tuple[float, ...]
    std: tuple[float, ...]
    trained: bool
    source: str = ""
    extra: dict[str, Any] = field(default_factory=dict)
    _constants: dict[tuple, tuple[torch.Tensor, torch.Tensor]] = field(
        default_factory=dict, init=False, repr=False, compare=False
    )

    def normalize(self, x: torch.Tensor) -> torch.Tensor:
        """Map images in [0, 1] to the model's normalised input space.

        Mean and std are made once per device and dtype: building them from Python numbers
        on a GPU is a blocking host-to-device copy, which must not happen in every step.
        """
        key = (x.device, x.dtype)
        if key not in self._constants:
            mean = torch.tensor(self.mean, dtype=x.dtype).view(1, -1, 1, 1).to(x.device)
            std = torch.tensor(self.std, dtype=x.dtype).view(1, -1, 1, 1).to(x.device)
            self._constants[key] = (mean, std)
        mean, std = self._constants[key]
        return (x - mean) / std

    def to(self, device: torch.device | str) -> LoadedModel:
        """Move the network to ``device`` (in place) and return self."""
        self.model.to(device)
        return self


def freeze(model: nn.Module) -> nn.Module:
    """Eval mode, no parameter gradients, every ``inplace`` flag switched off."""
    model.eval()
    for p in model.parameters():
        p.requires_grad_(False)
    for m in model.modules():
        if hasattr(m, "inplace") and isinstance(m.inplace, bool):
            m.inplace = False
    return model


def _timm_names() -> list[str]:
    import timm

    return timm.list_models()


def _load_checkpoint(model: nn.Module, path: Path) -> None:
    """Load a state dict (safetensors or torch.save with weights_only) strictly into ``model``."""
    if not path.is_file():
        raise MTIConfigError(f"checkpoint file not found: {path}")
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            state = load_file(str(path))
        else:
            state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # unpickling, safetensors and zip errors come in many kinds
        raise MTIConfigError(
            f"could not read checkpoint {path} ({type(err).__name__}: {err}); expected a state "
            "dict saved with torch.save or safetensors"
        ) from err
    for key in ("state_dict", "model", "model_state_dict"):
        if isinstance(state, dict) and isinstance(state.get(key), dict):
            state = state[key]
            break
    if not isinstance(state, dict):
        raise MTIConfigError(f"checkpoint {path} holds no state dict")
    state = {k.removeprefix("module."): v for k, v in state.items()}
    own = model.state_dict()
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    # checked before loading: load_state_dict raises a bare RuntimeError on a shape mismatch
    shape_errors = [
        f"{k}: checkpoint {tuple(getattr(v, 'shape', ()))} vs model {tuple(own[k].shape)}"
        for k, v in state.items()
        if k in own and getattr(v, "shape", None) != own[k].shape
    ]
    if missing or unexpected or shape_errors:
        raise MTIConfigError(
            f"checkpoint {path} does not match the model: "
            f"missing {missing[:5]}, unexpected {unexpected[:5]}"
            + (f", shape mismatch {shape_errors[:3]}" if shape_errors else "")
        )
    model.load_state_dict(state)


IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
TORCHVISION_PREFIX = "torchvision:"


def check_model_name(name: str, where: str = "") -> None:
    """The one model-name check: a clear error unless ``name`` is a built-in, a timm model or
    ``torchvision:NAME`` (``where`` says where the name was given, e.g. `` in models``)."""
    import timm

    if name in BUILTIN_MODELS or timm.is_model(name):
        return
    if name.startswith(TORCHVISION_PREFIX):
        from torchvision import models as tv

        short = name[len(TORCHVISION_PREFIX) :]
        if short in tv.list_models():
            return
        raise MTIConfigError(
            f"unknown torchvision model {name!r}{where}; closest names: "
            f"{closest(short, tv.list_models())}"
        )
    hints = closest(name, list(BUILTIN_MODELS) + _timm_names())
    raise MTIConfigError(
        f"unknown model {name!r}{where}: not a built-in ({', '.join(BUILTIN_MODELS)}), "
        f"not torchvision:NAME, nor a timm model; closest names: {hints}"
    )


def load_seeded(
    name: str | nn.Module | LoadedModel, seed: int, *args: Any, **kwargs: Any
) -> LoadedModel:
    """:func:`load_model` with torch's generator seeded by ``seed`` (the caller's random state
    left as it was), so a random-init model is the same one in every run of that seed: the
    model a search loads after ``seed_everything(seed)``."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return load_model(name, *args, **kwargs)


def _torchvision(
    name: str, pretrained: bool, kwargs: dict[str, Any]
) -> tuple[nn.Module, tuple, tuple, tuple, str]:
    """A torchvision model by name, its input size and normalisation (from its default
    weights' transforms, which are known without downloading anything)."""
    from torchvision import models as tv

    check_model_name(TORCHVISION_PREFIX + name)
    weights = None
    try:
        weights = tv.get_model_weights(name).DEFAULT
    except (ValueError, KeyError, AttributeError):  # a model without registered weights
        if pretrained:
            raise MTIConfigError(
                f"torchvision model {name!r} has no pretrained weights; use pretrained=False"
            ) from None
    size, mean, std = (3, 224, 224), IMAGENET_MEAN, IMAGENET_STD
    if weights is not None:
        preset = weights.transforms()
        side = getattr(preset, "crop_size", [224])
        side = side[0] if isinstance(side, (list, tuple)) else side
        size = (3, int(side), int(side))
        mean, std = tuple(getattr(preset, "mean", mean)), tuple(getattr(preset, "std", std))
    try:
        model = tv.get_model(name, weights=weights if pretrained else None, **kwargs)
    except Exception as err:  # download errors come in many kinds (URLError, OSError, ...)
        raise MTIConfigError(
            f"could not fetch pretrained weights for torchvision:{name} ({type(err).__name__}: "
            f"{err}); pass checkpoint=PATH with local weights or pretrained=False"
        ) from err
    tag = f"{weights}" if pretrained else "random-init"
    return model, size, mean, std, f"torchvision:{name}:{tag}"


def _timm(
    name: str, pretrained: bool, kwargs: dict[str, Any]
) -> tuple[nn.Module, tuple, tuple, tuple, str]:
    """A timm model by name and the input config timm records for it."""
    import timm

    check_model_name(name)
    try:
        model = timm.create_model(name, pretrained=pretrained, **kwargs)
    except Exception as err:  # timm raises many kinds when a download fails
        raise MTIConfigError(
            f"could not fetch pretrained weights for {name!r} ({type(err).__name__}: {err}); "
            "pass checkpoint=PATH with local weights or pretrained=false"
        ) from err
    data_cfg = timm.data.resolve_data_config({}, model=model)
    source = f"timm:{name}" + (":pretrained" if pretrained else ":random-init")
    return model, data_cfg["input_size"], data_cfg["mean"], data_cfg["std"], source


def _check_input_size(input_size: Any) -> tuple[int, int, int]:
    try:
        size = tuple(int(v) for v in input_size)
    except (TypeError, ValueError):
        size = ()
    if len(size) != 3 or min(size) < 1:
        raise MTIConfigError(
            f"input_size {input_size!r} must be (channels, height, width), e.g. (3, 224, 224)"
        )
    return size  # type: ignore[return-value]


def _check_runs_at(model: nn.Module, label: str, size: tuple, native: tuple) -> None:
    """A clear error, before any work, when ``model`` cannot run at an overridden input size
    (ViTs and LeViTs fix theirs at construction)."""
    try:
        with torch.no_grad():
            model(torch.zeros(1, *size))
    except Exception as err:  # assertions, shape and size errors come in many kinds
        raise MTIConfigError(
            f"model {label} does not run at input_size {list(size)} ({type(err).__name__}: "
            f"{str(err).splitlines()[0] if str(err) else ''}); its own is {list(native)}, or "
            "a size it accepts"
        ) from err


def load_model(
    name: str | nn.Module | LoadedModel,
    pretrained: bool = False,
    checkpoint: str | Path | None = None,
    device: torch.device | str = "cpu",
    input_size: Sequence[int] | None = None,
    mean: Sequence[float] | None = None,
    std: Sequence[float] | None = None,
) -> LoadedModel:
    """Load a model, frozen, with the input it expects.

    ``name`` is a built-in name (``curvenet``), ``torchvision:NAME``, a timm name, or any
    ``nn.Module`` (then ``input_size`` is required and ``mean``/``std`` default to ImageNet's;
    the module itself is frozen in place: eval mode, no parameter gradients, no ``inplace``
    flags). A ``LoadedModel`` passes through. ``pretrained`` asks timm or torchvision for their
    default weights (needs network access); ``checkpoint`` loads a local state dict instead.
    Built-in models always load their shipped weights (they exist to be studied trained).
    ``input_size`` (C, H, W) overrides the model's own, for networks that accept other sizes;
    ``mean``/``std`` override its normalisation.
    """
    if isinstance(name, LoadedModel):
        return name
    extra: dict[str, Any] = {}
    if isinstance(name, nn.Module):
        if input_size is None:
            raise MTIConfigError(
                f"input_size is required for an nn.Module ({type(name).__name__}): give "
                "(channels, height, width), e.g. input_size=(3, 224, 224)"
            )
        model, label = name, type(name).__name__
        native_size, native_mean, native_std = input_size, IMAGENET_MEAN, IMAGENET_STD
        trained, source = True, f"module:{label}"
    elif not isinstance(name, str) or not name:
        raise MTIConfigError(
            f"model {name!r}; give a built-in name, torchvision:NAME, a timm name or an nn.Module"
        )
    elif name in BUILTIN_MODELS:
        record = model_record(checkpoint, name) if checkpoint is not None else {}
        model, cfg = build_builtin(name, pretrained=True, **record.get("kwargs", {}))
        trained, label = cfg.get("trained", True), name
        source = cfg.get("source", f"builtin:{name}")
        native_size, native_mean, native_std = cfg["input_size"], cfg["mean"], cfg["std"]
        if record:  # a fine-tuned checkpoint runs at the size it was trained at
            native_size, native_mean, native_std = (
                record[k] for k in ("input_size", "mean", "std")
            )
        extra = {k: cfg[k] for k in ("attribution_layer",) if k in cfg}
    else:
        wanted = pretrained and checkpoint is None
        label = name
        # a checkpoint made by `mti experiment=train` records how its network was built
        record = model_record(checkpoint, name) if checkpoint is not None else {}
        kwargs = record.get("kwargs", {})
        if name.startswith(TORCHVISION_PREFIX):
            loaded = _torchvision(name[len(TORCHVISION_PREFIX) :], wanted, kwargs)
        else:
            loaded = _timm(name, wanted, kwargs)
        model, native_size, native_mean, native_std, source = loaded
        if record:
            native_size, native_mean, native_std = (
                record[k] for k in ("input_size", "mean", "std")
            )
        trained = wanted
    if checkpoint is not None:
        _load_checkpoint(model, Path(checkpoint))
        # the checkpoint's weights replace the random init they were loaded into
        source = source.removesuffix(":random-init")
        trained, source = True, f"{source}:checkpoint:{checkpoint}"
    size = _check_input_size(input_size if input_size is not None else native_size)
    mean = tuple(float(v) for v in (mean if mean is not None else native_mean))
    std = tuple(float(v) for v in (std if std is not None else native_std))
    if len(mean) != size[0] or len(std) != size[0] or min(std) <= 0:
        raise MTIConfigError(
            f"mean {mean} and std {std} need one value per input channel ({size[0]}), std > 0"
        )
    freeze(model)
    if input_size is not None and size != tuple(native_size):
        _check_runs_at(model, label, size, tuple(native_size))
    model.to(device)
    return LoadedModel(
        name=label,
        model=model,
        input_size=size,
        mean=mean,
        std=std,
        trained=bool(trained),
        source=source,
        extra=extra,
    )
