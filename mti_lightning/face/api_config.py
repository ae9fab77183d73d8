"""The config of a Python API call: the config the ``mti`` command composes (``conf/``),
updated by the call's keyword options, and the call's run directory.

Options mirror the config keys: a bare key of one group (``lr`` is ``search.lr``), a dotted
key, a group as a dict, or a group's choice by name; Lightning's ``devices``, ``strategy``,
``precision``, ``accelerator`` and ``num_nodes`` go to the trainer, and ``logger`` is a logger
kind, None, or a Lightning logger object.
"""

from __future__ import annotations

import datetime as _dt
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

from mti_lightning.core.errors import MTIConfigError, closest
from mti_lightning.core.models import LoadedModel, load_model
from mti_lightning.face.config_check import check_composed, composed

Model = str | nn.Module | LoadedModel
GROUPS = ("search", "param", "transform", "callbacks", "trainer", "checkpoint", "model")
GROUP_CHOICES = ("search", "param", "transform", "trainer", "logger")
LIGHTNING = ("devices", "strategy", "precision", "accelerator", "num_nodes")
MODEL_KEYS = ("input_size", "mean", "std", "pretrained", "checkpoint")


def compose(overrides: Sequence[str] = ()) -> dict[str, Any]:
    """The config the ``mti`` command composes for ``overrides`` (``conf/``), as plain data,
    checked against the schema (a bad key or value is one MTIConfigError)."""
    from omegaconf import OmegaConf

    cfg = OmegaConf.to_container(composed(overrides), resolve=True)
    check_composed(cfg)
    return cfg


def _model_group(model: Model | None) -> list[str]:
    """``model=NAME`` where ``conf/model/NAME.yaml`` exists, so its defaults apply."""
    if isinstance(model, str) and model:
        conf = Path(__file__).resolve().parents[1] / "conf" / "model" / f"{model}.yaml"
        if conf.is_file():
            return [f"model={model}"]
    return []


def _set(cfg: dict[str, Any], dotted: str, value: Any) -> None:
    *parents, last = dotted.split(".")
    node = cfg
    for i, part in enumerate(parents):
        if not isinstance(node.get(part), dict):
            raise MTIConfigError(f"unknown option {'.'.join(parents[: i + 1])!r}")
        node = node[part]
    if last not in node and parents and parents[0] != "target":
        raise MTIConfigError(
            f"unknown option {dotted!r}; valid in {'.'.join(parents)}: {', '.join(node)}"
        )
    if isinstance(value, Mapping) and isinstance(node.get(last), dict):
        for key, sub in value.items():
            _set(cfg, f"{dotted}.{key}", sub)
    elif isinstance(node.get(last), dict) and value is not None:
        raise MTIConfigError(
            f"option {dotted!r}={value!r}: {dotted} is a group of keys ({', '.join(node[last])}); "
            f"pass a dict or a dotted key such as {dotted}.{next(iter(node[last]), 'KEY')}"
        )
    else:
        node[last] = value


def _key_of(cfg: dict[str, Any], name: str, value: Any = None) -> str:
    """The dotted config key that option ``name`` (set to ``value``) means; ``checkpoint=PATH``
    is the model's weights, ``checkpoint={...}`` the search's checkpoint group."""
    if name in MODEL_KEYS and not isinstance(value, Mapping):
        return f"model.{name}"
    if "." in name or name in cfg:
        return name
    if name in LIGHTNING:
        return f"trainer.{name}"
    hits = [f"{g}.{name}" for g in GROUPS if isinstance(cfg.get(g), dict) and name in cfg[g]]
    if len(hits) == 1:
        return hits[0]
    if hits:
        raise MTIConfigError(
            f"option {name!r} is ambiguous: {' or '.join(hits)}; pass it dotted "
            f"(**{{{hits[0]!r}: ...}}) or as a group dict ({hits[0].split('.')[0]}={{...}})"
        )
    known = [k for g in GROUPS if isinstance(cfg.get(g), dict) for k in cfg[g]]
    raise MTIConfigError(
        f"unknown option {name!r}; closest config keys: {closest(name, [*known, *cfg])}"
    )


def build_config(
    base: Sequence[str], model: Model | None, options: Mapping[str, Any]
) -> tuple[dict[str, Any], Any]:
    """The composed config for ``base`` overrides and the model, updated by ``options``; and
    the logger object when ``options['logger']`` is one (else None)."""
    options = dict(options)
    logger = options.pop("logger", "__config__")
    overrides = [*base, *_model_group(model)]
    for group in GROUP_CHOICES:
        if isinstance(options.get(group), str):
            overrides.append(f"{group}={options.pop(group)}")
    logger_object = None
    if logger is None or logger is False:
        overrides.append("logger.kind=none")
    elif isinstance(logger, str) and logger != "__config__":
        overrides.append(f"logger={logger}")
    elif logger != "__config__":
        logger_object = logger
    cfg = compose(overrides)
    if isinstance(model, str) and model and not _model_group(model):
        cfg["model"]["name"] = model
    for name, value in options.items():
        _set(cfg, _key_of(cfg, name, value), value)
    return cfg, logger_object


def run_dir_for(run_dir: str | Path | None) -> Path:
    if run_dir is not None:
        return Path(run_dir)
    return Path("outputs") / "api" / _dt.datetime.now().strftime("%Y-%m-%d/%H-%M-%S-%f")


def write_config(cfg: dict[str, Any], run_dir: Path) -> None:
    """``config.yaml`` as the ``mti`` command writes it (tensors described, not stored)."""
    from omegaconf import OmegaConf

    from mti_lightning.core.io import write_text

    def plain(v: Any) -> Any:
        if isinstance(v, dict):
            return {k: plain(x) for k, x in v.items()}
        if isinstance(v, (list, tuple)):
            return [plain(x) for x in v]
        if isinstance(v, torch.Tensor):
            return f"<tensor {tuple(v.shape)}>"
        return v if v is None or isinstance(v, (str, int, float, bool)) else str(v)

    write_text(run_dir / "config.yaml", OmegaConf.to_yaml(plain(cfg)))


def loaded_model(model: Model, cfg: dict[str, Any]) -> LoadedModel | None:
    """A model object loaded with the config's model options (names load inside the run,
    after seeding, exactly as the ``mti`` command loads them)."""
    if isinstance(model, str):
        return None
    m = cfg["model"]
    lm = load_model(model, input_size=m.get("input_size"), mean=m.get("mean"), std=m.get("std"))
    cfg["model"] = {**m, "name": lm.name, "source": lm.source}
    return lm
