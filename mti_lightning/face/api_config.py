"""The config of a Python API call: the config the ``mti`` command composes (``conf/``),
updated by the call's keyword options, and the call's run directory.

Options mirror the config keys (the schema's, ``core/config_schema.py``): a bare key of the
call's own group (``lr`` is ``search.lr`` in a search, ``train.lr`` in a training, ``grid`` is
``atlas.grid``) or of the one shared group that holds it, a dotted key, a group as a dict, or a
group's choice by name; Lightning's ``devices``, ``strategy``,
``precision``, ``accelerator`` and ``num_nodes`` go to the trainer, and ``logger`` is a logger
kind, None, or a Lightning logger object.
"""

from __future__ import annotations

import datetime as _dt
from collections.abc import Mapping, Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

import torch
from torch import nn

from mti_lightning.core.config_checks import check_config, group_types
from mti_lightning.core.config_schema import MTIConfig
from mti_lightning.core.errors import MTIConfigError, closest
from mti_lightning.core.models import LoadedModel, load_model
from mti_lightning.face.config_check import check_composed, composed, typed_config

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


def compose_config(overrides: Sequence[str] = ()) -> MTIConfig:
    """:func:`compose`'s config as the typed object the code below the face takes."""
    return typed_config(compose(overrides))


def _model_group(model: Model | None) -> list[str]:
    """``model=NAME`` where the installed configs hold ``model/NAME.yaml`` (read through the
    package ``mti_lightning.conf``, so an editable and a wheel install agree), so its
    defaults apply."""
    if isinstance(model, str) and model:
        from importlib.resources import files

        if files("mti_lightning.conf").joinpath("model", f"{model}.yaml").is_file():
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


def _key_of(cfg: dict[str, Any], name: str, value: Any = None, own: str = "search") -> str:
    """The dotted config key that option ``name`` (set to ``value``) means, for a call whose
    own group is ``own`` (``search``, ``atlas``, ``compare``, ``train``): a dotted key as it
    is; ``checkpoint=PATH`` and the other model keys the model's; a key of the call's own group;
    a top-level key; Lightning's keys the trainer's; else the one shared group holding it."""
    if "." in name:
        return name
    if name in MODEL_KEYS and not isinstance(value, Mapping):
        return f"model.{name}"
    if isinstance(cfg.get(own), dict) and name in cfg[own]:
        return f"{own}.{name}"
    # a group another task's experiment sets (null here: ``atlas=PATH`` in a search is
    # callbacks.atlas) is not this call's key
    if name in cfg and not (cfg[name] is None and name in group_types(MTIConfig)):
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
    known = [k for g in (own, *GROUPS) if isinstance(cfg.get(g), dict) for k in cfg[g]]
    raise MTIConfigError(
        f"unknown option {name!r}; closest config keys: {closest(name, [*known, *cfg])}"
    )


def _gone(key: str) -> None:
    """An ``atlas.*`` key that moved to the shared model and target keys names its
    replacement."""
    from mti_lightning.journeys.atlas.face import GONE

    group, _, name = key.partition(".")
    if group == "atlas" and name in GONE:
        raise MTIConfigError(f"{key} is gone; use {GONE[name]}")


def build_config(
    base: Sequence[str],
    model: Model | None,
    options: Mapping[str, Any],
    own: str = "search",
    fixed: Mapping[str, Any] | None = None,
) -> tuple[MTIConfig, Any]:
    """The one resolver of a call's keyword options: the config composed for ``base``
    overrides and the model, updated by ``options`` (bare names resolved by :func:`_key_of`
    for a call whose own group is ``own``) and then by ``fixed`` (dotted keys the call sets
    itself: the target, the models, ...), checked once against the schema. Returns it (typed)
    and the logger object when ``options['logger']`` is one (else None)."""
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
        key = _key_of(cfg, name, value, own)
        _gone(key)
        _set(cfg, key, value)
    for dotted, value in (fixed or {}).items():
        *parents, last = dotted.split(".")
        node = cfg
        for part in parents:
            node = node[part]
        node[last] = value
    check_config(cfg)
    return typed_config(cfg), logger_object


def run_dir_for(run_dir: str | Path | None) -> Path:
    if run_dir is not None:
        return Path(run_dir)
    return Path("outputs") / "api" / _dt.datetime.now().strftime("%Y-%m-%d/%H-%M-%S-%f")


def write_config(cfg: MTIConfig, run_dir: Path, lm: LoadedModel | None = None) -> None:
    """``config.yaml`` as the ``mti`` command writes it (tensors described, not stored);
    ``lm``: the model object the call was given, recorded by its name and source."""
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

    record = asdict(cfg)
    if lm is not None:
        record["model"]["source"] = lm.source
    write_text(run_dir / "config.yaml", OmegaConf.to_yaml(plain(record)))


def loaded_model(model: Model, cfg: MTIConfig) -> LoadedModel | None:
    """A model object loaded with the config's model options (names load inside the run,
    after seeding, exactly as the ``mti`` command loads them); ``cfg.model.name`` becomes its
    name."""
    if isinstance(model, str):
        return None
    m = cfg.model
    lm = load_model(model, input_size=m.input_size, mean=m.mean, std=m.std)
    m.name = lm.name
    return lm
