"""Targets from configs: a spec string, a list of them, or structured ``{layer, channel,
position}`` entries (``channel`` may be a list), expanded into feature specs."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from mti_lightning.core.errors import MTIConfigError
from mti_lightning.core.features import FeatureSpec, parse_feature, parse_position


def _from_mapping(entry: Mapping[str, Any]) -> list[FeatureSpec]:
    if "spec" in entry and entry["spec"]:
        return parse_targets(entry["spec"])
    if "layer" not in entry or not entry["layer"]:
        raise MTIConfigError(f"target {dict(entry)} has no layer; give layer and channel")
    position = parse_position(entry.get("position", "center") or "center")
    direction = entry.get("direction")
    if direction is not None:
        return [FeatureSpec(str(entry["layer"]), None, position, tuple(map(float, direction)))]
    channels = entry.get("channel", 0)
    channels = (
        list(channels)
        if isinstance(channels, Sequence) and not isinstance(channels, str)
        else [channels]
    )
    specs = []
    for c in channels:
        try:
            c = int(c)
        except (TypeError, ValueError) as err:
            raise MTIConfigError(f"target channel {c!r} is not an integer") from err
        specs.append(FeatureSpec(str(entry["layer"]), c, position))
    return specs


def parse_targets(value: Any) -> list[FeatureSpec]:
    """Feature specs from a target config value."""
    if isinstance(value, str):
        return [parse_feature(value)]
    if isinstance(value, Mapping):
        return _from_mapping(value)
    if isinstance(value, Sequence):
        specs = [s for item in value for s in parse_targets(item)]
        if not specs:
            raise MTIConfigError("target list is empty; give at least one LAYER:CHANNEL@POSITION")
        return specs
    raise MTIConfigError(
        f"target {value!r} is neither LAYER:CHANNEL@POSITION nor {{layer, channel, position}}"
    )
