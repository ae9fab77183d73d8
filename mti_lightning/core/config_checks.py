"""The checks of a composed config against the schema (``core/config_schema.py``): every
value's type, range or choice, one MTIConfigError naming the key, the value and what would be
valid. The composed plain data or the typed :class:`MTIConfig` in, so the ``mti`` command,
the Python API and the engine share them."""

from __future__ import annotations

import dataclasses
import math
import typing
from typing import Any

from mti_lightning.core.config_schema import MISSING, MTIConfig
from mti_lightning.core.errors import MTIConfigError, closest


def group_types(cls: type) -> dict[str, type]:
    """The fields of ``cls`` that are groups (dataclasses), by name."""
    hints = typing.get_type_hints(cls)
    out = {}
    for f in dataclasses.fields(cls):
        inner = [a for a in typing.get_args(hints[f.name]) if a is not type(None)]
        kind = inner[0] if len(inner) == 1 else hints[f.name]
        if dataclasses.is_dataclass(kind):
            out[f.name] = kind
    return out


def schema_keys(cls: type = MTIConfig, prefix: str = "") -> dict[str, Any]:
    """Every dotted key of the schema and its default (groups expanded)."""
    out: dict[str, Any] = {}
    groups = group_types(cls)
    for f in dataclasses.fields(cls):
        key = f"{prefix}{f.name}"
        if f.name in groups:
            out.update(schema_keys(groups[f.name], f"{key}."))
        else:
            out[key] = f.default_factory() if f.default_factory is not dataclasses.MISSING else f.default
    return out


def _is_number(value: Any, integer: bool) -> bool:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return False
    return isinstance(value, int) if integer else math.isfinite(value)


def _check_field(key: str, value: Any, hint: Any, meta: Any) -> None:
    """One field against its type and rule."""
    args = typing.get_args(hint)
    nullable = type(None) in args
    base = next((a for a in args if a is not type(None)), hint) if nullable else hint
    if (value is None and nullable) or (isinstance(value, str) and value == MISSING):
        return
    choices = meta.get("choices", ())
    if choices:
        if (str(value) if base is Any else value) not in choices:
            raise MTIConfigError(f"{key} {value!r}; valid: {', '.join(map(str, choices))}")
        return
    if base is bool:
        if not isinstance(value, bool):
            raise MTIConfigError(f"{key}={value!r}; must be true or false")
    elif base in (int, float):
        low, above = meta.get("low"), meta.get("above", False)
        what = "an integer" if base is int else "a finite number"
        if low is not None:
            what += f" {'>' if above else '>='} {low:g}"
        if nullable:
            what += " (or null)"
        ok = _is_number(value, base is int)
        if ok and low is not None:
            ok = value > low if above else value >= low
        if not ok:
            raise MTIConfigError(f"{key}={value!r}; must be {what}")


def _check_lists(cfg: dict[str, Any]) -> None:
    """The values whose shape a type cannot say."""
    scale = _get(cfg, "transform.scale")
    if scale is not _ABSENT:
        good = (
            isinstance(scale, (list, tuple))
            and len(scale) == 2
            and all(_is_number(v, False) for v in scale)
            and 0 < scale[0] <= scale[1]
        )
        if not good:
            raise MTIConfigError(
                f"transform.scale={scale!r}; must be [low, high] with 0 < low <= high, "
                "e.g. [0.85, 1.0]"
            )
    canvas = _get(cfg, "param.canvas")
    if canvas not in (_ABSENT, None):
        good = isinstance(canvas, (list, tuple)) and len(canvas) == 2
        if not (good and all(_is_number(v, True) and v >= 1 for v in canvas)):
            raise MTIConfigError(f"param.canvas={canvas!r}; must be [height, width] in px, or null")
    steps = _get(cfg, "callbacks.snapshot_steps")
    if steps not in (_ABSENT, None):
        if not isinstance(steps, (list, tuple)):
            raise MTIConfigError(
                f"callbacks.snapshot_steps={steps!r}; must be a list of steps, e.g. [0]"
            )
        for step in steps:
            if not (_is_number(step, True) and step >= 0):
                raise MTIConfigError(
                    f"callbacks.snapshot_steps={step!r}; must be an integer >= 0"
                )
    _check_census(cfg)
    for key in ("circuit.tense_fraction", "circuit.cancel_ratio"):
        value = _get(cfg, key)
        if _is_number(value, False) and value > 1:
            raise MTIConfigError(f"{key}={value!r}; must be a fraction in (0, 1]")
    devices = _get(cfg, "trainer.devices")
    if devices is not _ABSENT and not _good_devices(devices):
        raise MTIConfigError(
            f"trainer.devices={devices!r}; valid: a count >= 1, -1 (every device), auto, or a "
            "list of device ids such as [0,1]"
        )


def _check_census(cfg: dict[str, Any]) -> None:
    """The census's layers (names, depths in (0, 1], ``all``), units and job number."""
    layers = _get(cfg, "census.layers")
    if layers is not _ABSENT:
        if not isinstance(layers, (list, tuple)) or not layers:
            raise MTIConfigError(
                f"census.layers={layers!r}; must be a non-empty list of layer names, relative "
                "depths in (0, 1] or all, e.g. [layer3.0.bn1,0.5]"
            )
        for entry in layers:
            if _is_number(entry, False) and not 0 < entry <= 1:
                raise MTIConfigError(
                    f"census.layers: depth {entry} outside (0, 1]; valid: a fraction of the "
                    "model's depth (0.5: the block at half depth, 1.0: the last block)"
                )
            if not isinstance(entry, str) and not _is_number(entry, False):
                raise MTIConfigError(
                    f"census.layers: {entry!r} is neither a layer name nor a depth in (0, 1]"
                )
    units = _get(cfg, "census.units")
    if units not in (_ABSENT, "all") and not (_is_number(units, True) and units >= 1):
        raise MTIConfigError(
            f"census.units={units!r}; valid: all (every channel) or a count >= 1 (a seeded "
            "sample of each layer's channels)"
        )
    job, jobs = _get(cfg, "census.job"), _get(cfg, "census.jobs")
    if _is_number(job, True) and _is_number(jobs, True) and not 0 <= job < jobs:
        raise MTIConfigError(f"census.job={job} with census.jobs={jobs}; valid: 0..{jobs - 1}")
    if _is_number(jobs, True) and jobs > 1 and _get(cfg, "census.out") is None:
        raise MTIConfigError(
            f"census.jobs={jobs} needs census.out=DIR: the census directory its jobs share "
            "(each job of a multirun has its own run directory)"
        )


def _good_devices(devices: Any) -> bool:
    if devices == "auto" or (_is_number(devices, True) and (devices >= 1 or devices == -1)):
        return True
    if isinstance(devices, str):
        parts = [p.strip() for p in devices.split(",") if p.strip()]
        return bool(parts) and all(p.isdigit() for p in parts) and devices != "0"
    if isinstance(devices, (list, tuple)):
        return bool(devices) and all(_is_number(d, True) and d >= 0 for d in devices)
    return False


_ABSENT = object()


def _get(cfg: Any, key: str) -> Any:
    node = cfg
    for part in key.split("."):
        if not isinstance(node, dict) or part not in node:
            return _ABSENT
        node = node[part]
    return node


def _check_group(cfg: dict[str, Any], cls: type, prefix: str, strict: bool) -> None:
    hints = typing.get_type_hints(cls)
    groups = group_types(cls)
    if strict:
        names = [f.name for f in dataclasses.fields(cls)]
        for name in cfg:
            if name not in names:
                raise MTIConfigError(unknown_key(f"{prefix}{name}", cfg[name]))
    for f in dataclasses.fields(cls):
        if f.name not in cfg:
            continue
        value, key = cfg[f.name], f"{prefix}{f.name}"
        if f.name in groups:
            if isinstance(value, dict):
                _check_group(value, groups[f.name], f"{key}.", strict)
            elif value is not None:
                raise MTIConfigError(f"{key}={value!r}; must be a group of keys")
        else:
            _check_field(key, value, hints[f.name], f.metadata)


def unknown_key(key: str, value: Any) -> str:
    """The message for a key the schema does not hold: the closest keys it does."""
    near = closest(key, schema_keys(), n=3)
    return f"{key}={value}: unknown key; closest: {', '.join(near) or 'none'}"


def plain(cfg: Any) -> Any:
    """A config object as plain data without copying its values: each group a dict (what
    the checks read; a record is written with ``dataclasses.asdict``)."""
    if dataclasses.is_dataclass(cfg) and not isinstance(cfg, type):
        return {f.name: plain(getattr(cfg, f.name)) for f in dataclasses.fields(cfg)}
    return cfg


def check_config(cfg: MTIConfig | dict[str, Any], strict: bool = False) -> None:
    """Check every value of a config (an :class:`MTIConfig` or, as composed, plain data)
    against the schema: its type, its range or choices; one MTIConfigError naming the first bad
    key, its value and what would be valid. Keys the config does not hold are skipped;
    ``strict``: a key the schema does not hold is an error too (the config as composed)."""
    cfg = plain(cfg)
    _check_group(cfg, MTIConfig, "", strict)
    _check_lists(cfg)


def explain(key: str, value: Any) -> str | None:
    """The check's message for ``key`` set to ``value`` alone, or None when it passes."""
    *parents, last = key.split(".")
    node: dict[str, Any] = {last: value}
    for part in reversed(parents):
        node = {part: node}
    try:
        check_config(node)
    except MTIConfigError as err:
        return str(err)
    return None
