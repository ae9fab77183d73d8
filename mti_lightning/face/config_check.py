"""Every bad value ends the same way: composing ``conf/`` with the user's overrides is checked
once against the schema (``core/config_schema.py``), and whatever Hydra or OmegaConf raise
while composing (an unknown key or config choice, a value of the wrong type, a run directory
that cannot be made) becomes one line naming the key, the value and what would be valid."""

from __future__ import annotations

import dataclasses
import re
from typing import Any

from hydra.errors import ConfigCompositionException, MissingConfigException, OverrideParseException
from omegaconf.errors import OmegaConfBaseException, ValidationError

from mti_lightning.core.config_checks import check_config, explain, group_types, unknown_key
from mti_lightning.core.config_schema import MTIConfig
from mti_lightning.core.errors import MTIConfigError


def typed_config(data: dict[str, Any], cls: type = MTIConfig) -> Any:
    """The composed config (plain data, checked) as the schema's objects: what the code
    below the face receives. Values are kept as they are (the API's tensors and datasets too);
    a group left null stays None."""
    groups = group_types(cls)
    values = {}
    for f in dataclasses.fields(cls):
        if f.name not in data:
            continue
        value = data[f.name]
        if f.name in groups and isinstance(value, dict):
            value = typed_config(value, groups[f.name])
        values[f.name] = value
    stray = sorted(set(data) - set(values))
    if stray:
        raise MTIConfigError(unknown_key(stray[0], data[stray[0]]))
    return cls(**values)


def check_composed(cfg: dict[str, Any]) -> None:
    """Check a freshly composed config (plain data): every key the schema's, every value in
    range; the atlas's own rules too when the atlas group is there."""
    check_config(cfg, strict=True)
    if isinstance(cfg.get("atlas"), dict):
        from mti_lightning.journeys.atlas.config import AtlasConfig

        try:
            AtlasConfig.from_dict(cfg["atlas"])
        except MTIConfigError as err:  # the atlas names its fields bare: name the key
            name = re.match(r"\w+", str(err))
            if name and name.group(0) in cfg["atlas"]:
                raise MTIConfigError(f"atlas.{err}") from err
            raise


def _missing_config(err: MissingConfigException) -> str:
    found = re.search(r"Could not find '([^']+)'", str(err))
    if not found or "/" not in found.group(1) or not err.options:
        return str(err).splitlines()[0]
    group, name = found.group(1).rsplit("/", 1)
    message = f"{group}={name}: no such {group} config; valid: {', '.join(sorted(err.options))}"
    if group == "model":
        message += f" (or any timm or torchvision:NAME model: model.name={name})"
    return message


def _composition(err: ConfigCompositionException) -> str:
    cause = err.__cause__
    text = str(err)
    added = re.search(r"use \+([^=\s]+)=(.*)$", text, re.MULTILINE)
    if added:
        return unknown_key(added.group(1), added.group(2))
    if isinstance(cause, ValidationError) and cause.full_key:
        why = explain(str(cause.full_key), cause.value)
        return why or f"{cause.full_key}={cause.value!r}; {str(cause.msg).splitlines()[0]}"
    if isinstance(cause, OmegaConfBaseException) and cause.full_key:
        return f"{cause.full_key}: {str(cause.msg).splitlines()[0]}"
    return text.splitlines()[0]


def composition_error(err: BaseException) -> str | None:
    """The one-line message for an error raised while composing the config or making the run
    directory (before any task starts); None for any other error."""
    if isinstance(err, MTIConfigError):
        return str(err)
    if isinstance(err, MissingConfigException):
        return _missing_config(err)
    if isinstance(err, OverrideParseException):
        return f"cannot read the override {err.override!r}: {str(err).splitlines()[0]}"
    if isinstance(err, ConfigCompositionException):
        return _composition(err)
    if isinstance(err, OmegaConfBaseException):
        return str(err).splitlines()[0]
    if isinstance(err, OSError) and err.filename:
        return (
            f"hydra.run.dir={err.filename}: cannot make the run directory ({err.strerror}); "
            "give a folder you can write to (hydra.run.dir=..., hydra.sweep.dir=... for -m)"
        )
    return None


def composed(overrides: list[str]) -> Any:
    """Hydra's composition of ``conf/`` for ``overrides`` (an OmegaConf config); every
    composition error is one MTIConfigError."""
    from hydra import compose, initialize_config_module

    try:
        with initialize_config_module("mti_lightning.conf", version_base="1.3"):
            return compose("config", overrides=list(overrides))
    except (ConfigCompositionException, OverrideParseException, OmegaConfBaseException) as err:
        raise MTIConfigError(composition_error(err)) from err
