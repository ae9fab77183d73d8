"""Model loading: timm models by name, local checkpoints and built-in models, frozen for probing.

Every loaded model is in eval mode with frozen parameters and no in-place activations (an
in-place ReLU would overwrite the pre-activation a probe captured), and carries the input size
and normalisation it expects, read from timm's own data config.
"""

from __future__ import annotations

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


def load_model(
    name: str,
    pretrained: bool = False,
    checkpoint: str | Path | None = None,
    device: torch.device | str = "cpu",
    input_size: tuple[int, int, int] | None = None,
) -> LoadedModel:
    """Load a built-in model or a timm model by name, frozen, with its input config.

    ``pretrained`` asks timm for its weights (needs network access); ``checkpoint`` loads a
    local state dict instead. Built-in models load their shipped weights when ``pretrained``
    or by default (they exist to be studied trained). ``input_size`` (C, H, W) overrides the
    model's own, for networks that accept other sizes (small canvases in tests and sweeps).
    """
    if name in BUILTIN_MODELS:
        model, cfg = build_builtin(name, pretrained=True)
        trained, source = cfg.get("trained", True), f"builtin:{name}"
        native_size, mean, std = cfg["input_size"], cfg["mean"], cfg["std"]
    else:
        import timm

        if not timm.is_model(name):
            hints = closest(name, list(BUILTIN_MODELS) + _timm_names())
            raise MTIConfigError(
                f"unknown model {name!r}: not a built-in ({', '.join(BUILTIN_MODELS)}) "
                f"nor a timm model; closest names: {hints}"
            )
        # a checkpoint made by `mti experiment=train` says how its network was built
        record = model_record(checkpoint, name) if checkpoint is not None else {}
        try:
            model = timm.create_model(
                name, pretrained=pretrained and checkpoint is None, **record.get("kwargs", {})
            )
        except Exception as err:  # timm raises many kinds when a download fails
            raise MTIConfigError(
                f"could not fetch pretrained weights for {name!r} ({type(err).__name__}: {err}); "
                "pass checkpoint=PATH with local weights or pretrained=false"
            ) from err
        trained = pretrained
        source = f"timm:{name}" + (":pretrained" if pretrained else ":random-init")
        data_cfg = timm.data.resolve_data_config({}, model=model)
        native_size, mean, std = data_cfg["input_size"], data_cfg["mean"], data_cfg["std"]
        if record:
            native_size, mean, std = record["input_size"], record["mean"], record["std"]
    if checkpoint is not None:
        _load_checkpoint(model, Path(checkpoint))
        trained, source = True, f"{source}:checkpoint:{checkpoint}"
    if input_size is not None and (len(input_size) != 3 or min(input_size) < 1):
        raise MTIConfigError(f"input_size {input_size} must be (channels, height, width)")
    freeze(model).to(device)
    return LoadedModel(
        name=name,
        model=model,
        input_size=tuple(int(v) for v in (input_size or native_size)),
        mean=tuple(float(v) for v in mean),
        std=tuple(float(v) for v in std),
        trained=bool(trained),
        source=source,
    )
